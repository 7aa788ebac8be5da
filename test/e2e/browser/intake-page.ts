/**
 * Drives the key intake's page in a real headless Chromium, from inside the namespace it runs in
 * (`ip netns exec <laptop> node intake-page.ts <page URL> <route>`, the key on stdin): opens the
 * page, waits for the routes it lists, types the key into the field (DevTools Input.insertText,
 * as a paste), submits, and prints one JSON line: what the page showed before and after. Uses
 * Node's global WebSocket for the DevTools protocol; Chromium's debugging port is on the
 * namespace's own loopback.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [pageUrl, route] = process.argv.slice(2);
if (!pageUrl || !route) throw new Error('usage: intake-page.ts <page URL> <route>  (key on stdin)');
const PAGE: string = pageUrl;
let key = '';
for await (const c of process.stdin) key += c;
key = key.trim();

const PORT = 9333;
const profile = mkdtempSync(join(tmpdir(), 'cannes-chromium-'));
const browser = spawn(
  'chromium',
  [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    `--user-data-dir=${profile}`,
    `--remote-debugging-port=${PORT}`,
    '--remote-debugging-address=127.0.0.1',
    pageUrl,
  ],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
let browserLog = '';
browser.stderr.on('data', (c) => {
  if (browserLog.length < 20_000) browserLog += c;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function pageSocket(): Promise<string> {
  for (let i = 0; i < 100; i++) {
    try {
      const list = (await (await fetch(`http://127.0.0.1:${PORT}/json/list`)).json()) as {
        type: string;
        url: string;
        webSocketDebuggerUrl: string;
      }[];
      const page = list.find((t) => t.type === 'page' && t.url.startsWith(PAGE));
      if (page) return page.webSocketDebuggerUrl;
    } catch {
      // not up yet
    }
    await sleep(300);
  }
  throw new Error(`chromium did not open the page: ${browserLog.slice(-2000)}`);
}

let nextId = 1;
const pending = new Map<
  number,
  (v: { result?: { result?: { value?: unknown } }; error?: unknown }) => void
>();
function send(ws: WebSocket, method: string, params: Record<string, unknown> = {}) {
  const id = nextId++;
  ws.send(JSON.stringify({ id, method, params }));
  return new Promise<{ result?: { result?: { value?: unknown } }; error?: unknown }>((r) =>
    pending.set(id, r),
  );
}

async function evaluate(ws: WebSocket, expression: string): Promise<unknown> {
  const r = await send(ws, 'Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
  if (r.error) throw new Error(`evaluate failed: ${JSON.stringify(r.error)}`);
  return r.result?.result?.value;
}

async function until(ws: WebSocket, expression: string, what: string): Promise<unknown> {
  for (let i = 0; i < 150; i++) {
    const v = await evaluate(ws, expression);
    if (v !== null && v !== undefined && v !== false && v !== '') return v;
    await sleep(200);
  }
  throw new Error(`the page never showed ${what}`);
}

const routes = `JSON.stringify([...document.querySelectorAll('#routes li')].map((li) => [li.dataset.route, li.dataset.hasKey]))`;
try {
  const ws = new WebSocket(await pageSocket());
  await new Promise((r, j) => {
    ws.onopen = r;
    ws.onerror = j;
  });
  ws.onmessage = (m) => {
    const msg = JSON.parse(String(m.data)) as { id?: number };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg as never);
  };
  await send(ws, 'Runtime.enable');
  await until(
    ws,
    `document.querySelector('#routes li') !== null || document.getElementById('result').textContent`,
    'its routes',
  );
  const before = JSON.parse(String(await evaluate(ws, routes)));
  const status = String(await evaluate(ws, `document.getElementById('result').textContent`));
  await evaluate(
    ws,
    `document.getElementById('route').value = ${JSON.stringify(route)}; document.getElementById('key').focus(); true`,
  );
  await send(ws, 'Input.insertText', { text: key });
  await evaluate(ws, `document.getElementById('set').requestSubmit(); true`);
  const ok = await until(ws, `document.getElementById('result').dataset.ok`, 'an answer');
  const result = String(await evaluate(ws, `document.getElementById('result').textContent`));
  await sleep(500);
  const after = JSON.parse(String(await evaluate(ws, routes)));
  const fieldEmpty = (await evaluate(ws, `document.getElementById('key').value === ''`)) === true;
  process.stdout.write(
    `${JSON.stringify({ before, status, ok: ok === 'true', result, after, fieldEmpty })}\n`,
  );
  ws.close();
} finally {
  browser.kill('SIGKILL');
  await new Promise((r) => browser.once('exit', r));
  rmSync(profile, { recursive: true, force: true });
}
