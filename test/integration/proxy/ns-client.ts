// A client that runs INSIDE a test network namespace (`ip netns exec <ns> node ns-client.ts`).
// Commands arrive as JSON lines on stdin; events go out as JSON lines on stdout. Only node:
// builtins, so it runs without the project around it.
import { createHash } from 'node:crypto';
import { type ClientRequest, request } from 'node:http';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';

interface Command {
  op: 'request' | 'abort' | 'raw';
  id: string;
  host?: string;
  port?: number;
  path?: string;
  method?: string;
  headers?: string[];
  body?: string;
  /** Send a generated body of this many bytes (1 MiB writes, backpressure honoured). */
  bodySize?: number;
  /** Emit every response chunk as it arrives. */
  stream?: boolean;
  /** raw: the bytes to send (utf8), in pieces written with `gapMs` between them. */
  pieces?: string[];
  gapMs?: number;
  /** raw: stop waiting after this long without the server closing. */
  waitMs?: number;
}

const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
const inflight = new Map<string, ClientRequest>();

function errCode(err: unknown): string {
  if (err instanceof Error && 'code' in err && typeof err.code === 'string') return err.code;
  return err instanceof Error ? err.message : String(err);
}

async function doRequest(c: Command): Promise<void> {
  const req = request({
    host: c.host,
    port: c.port,
    path: c.path,
    method: c.method ?? 'GET',
    headers: c.headers ?? [],
    agent: false,
  });
  inflight.set(c.id, req);
  let done = false;
  const finish = (o: Record<string, unknown>) => {
    if (done) return;
    done = true;
    inflight.delete(c.id);
    out({ id: c.id, ...o });
  };
  req.on('error', (err) => finish({ ev: 'error', code: errCode(err) }));
  req.on('response', (res) => {
    out({ id: c.id, ev: 'response', status: res.statusCode, headers: res.rawHeaders });
    const parts: Buffer[] = [];
    let bytes = 0;
    res.on('data', (b: Buffer) => {
      bytes += b.length;
      if (c.stream) out({ id: c.id, ev: 'chunk', data: b.toString('utf8') });
      else parts.push(b);
    });
    res.on('end', () => finish({ ev: 'end', bytes, body: Buffer.concat(parts).toString('utf8') }));
    res.on('error', (err) => finish({ ev: 'error', code: errCode(err) }));
    res.on('close', () => {
      if (!res.complete) finish({ ev: 'error', code: 'incomplete' });
    });
  });
  if (c.bodySize !== undefined) {
    const hash = createHash('sha256');
    const block = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < block.length; i++) block[i] = (i * 31 + 7) & 0xff;
    let left = c.bodySize;
    while (left > 0 && !done) {
      const piece = left >= block.length ? block : block.subarray(0, left);
      hash.update(piece);
      left -= piece.length;
      if (!req.write(piece)) await new Promise((r) => req.once('drain', r));
    }
    out({ id: c.id, ev: 'sent', sha256: hash.digest('hex') });
    req.end();
  } else {
    req.end(c.body);
  }
}

function doRaw(c: Command): void {
  const sock = connect({ host: c.host!, port: c.port! });
  const parts: Buffer[] = [];
  let done = false;
  const finish = (closed: boolean, code?: string) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    sock.destroy();
    out({ id: c.id, ev: 'raw', closed, code, data: Buffer.concat(parts).toString('latin1') });
  };
  const timer = setTimeout(() => finish(false), c.waitMs ?? 5000);
  sock.on('data', (b) => parts.push(b));
  sock.on('end', () => finish(true));
  sock.on('close', () => finish(true));
  sock.on('error', (err) => finish(true, errCode(err)));
  sock.on('connect', async () => {
    for (const p of c.pieces ?? []) {
      if (done) return;
      sock.write(Buffer.from(p, 'latin1'));
      if (c.gapMs) await new Promise((r) => setTimeout(r, c.gapMs));
    }
  });
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const c = JSON.parse(line) as Command;
  if (c.op === 'request') void doRequest(c);
  else if (c.op === 'raw') doRaw(c);
  else if (c.op === 'abort') {
    inflight.get(c.id)?.destroy();
    out({ id: c.id, ev: 'aborted' });
  }
});
rl.on('close', () => process.exit(0));
out({ ev: 'ready' });
