// Bundles the host-side proxy into ONE self-contained ESM file that runs with plain
// `node` on the VPS (no node_modules there): undici and prom-client are inlined, only
// `node:` builtins stay external. `--outfile PATH` builds elsewhere (tests use a temp dir).
import { build } from 'esbuild';

const i = process.argv.indexOf('--outfile');
const outfile = i === -1 ? 'dist/proxy/cannes-proxy.mjs' : process.argv[i + 1];
if (!outfile) throw new Error('--outfile needs a path');

const result = await build({
  entryPoints: [new URL('../proxy/main.ts', import.meta.url).pathname],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  metafile: true,
  // Some CommonJS dependencies call require() on node builtins; give ESM a require.
  // Runs before any bundled module is evaluated: undici 8 needs Node >= 22.19 and fails with
  // an obscure TypeError on older versions, so say so plainly instead.
  banner: {
    js: [
      '#!/usr/bin/env node',
      "import { createRequire as __cannesCreateRequire } from 'node:module';",
      'const require = __cannesCreateRequire(import.meta.url);',
      "{ const [a, b] = process.versions.node.split('.').map(Number); if (a < 22 || (a === 22 && b < 19)) { process.stderr.write('cannes-proxy: needs Node.js >= 22.19, this is ' + process.version + '\\n'); process.exit(2); } }",
    ].join('\n'),
  },
  logLevel: 'warning',
});

// The proxy must not drag operator code along: only proxy/ and common/.
const ALLOWED_LOCAL = /^(proxy\/|common\/|node_modules\/)/;
for (const input of Object.keys(result.metafile.inputs)) {
  if (!ALLOWED_LOCAL.test(input))
    throw new Error(`proxy bundle pulls in ${input}: keep proxy/ self-contained`);
}
