/**
 * Runs the fake upstreams inside a network namespace for bridge.test.ts (a test process
 * cannot enter a namespace itself). Prints one JSON line with the URLs, then one JSON line
 * per request received: `{ "upstream", "path", "credentials" }`.
 *   ip netns exec NS node netns-upstreams.ts <anthropic key> <openai key> <gemini key>
 */
import { anthropic, gemini, openai, type RunningUpstream } from '../../upstreams/index.ts';

const [a, o, g] = process.argv.slice(2);
if (!a || !o || !g) throw new Error('usage: netns-upstreams.ts KEY_ANTHROPIC KEY_OPENAI KEY_GEMINI');
const ups: Record<string, RunningUpstream> = {
  claude: await anthropic.start({ keys: [a] }),
  gpt: await openai.start({ keys: [o] }),
  gemini: await gemini.start({ keys: [g] }),
};
console.log(JSON.stringify({ urls: Object.fromEntries(Object.entries(ups).map(([k, u]) => [k, u.url])) }));
const printed: Record<string, number> = {};
setInterval(() => {
  for (const [name, u] of Object.entries(ups)) {
    for (const r of u.requests.slice(printed[name] ?? 0)) {
      console.log(JSON.stringify({ upstream: name, path: r.path, credentials: r.credentials }));
    }
    printed[name] = u.requests.length;
  }
}, 50);
process.on('SIGTERM', () => process.exit(0));
