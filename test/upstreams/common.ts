import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { waitFor as poll } from '../lib/wait.ts';

/**
 * Shared machinery of the fake LLM upstreams (Anthropic, OpenAI, Gemini). Each fake speaks
 * its provider's wire format (JSON and SSE, error shapes), checks the credential in the
 * provider's own header, and records every request so a test can prove which credential
 * arrived and which did not. Loopback only.
 */
export interface UpstreamRecord {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  /** Raw query string without `?` (empty when none). */
  readonly search: string;
  /** Headers as received (lower-case names; repeated ones as arrays). */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Every header/query credential seen, in arrival order, e.g. `{ where: 'x-api-key', value }`. */
  readonly credentials: readonly { readonly where: string; readonly value: string }[];
  bodyBytes: number;
  bodySha256: string;
  /** The parsed JSON body when it was small JSON, else undefined. */
  json: unknown;
  /** Number of stream events (deltas) written so far. */
  eventsWritten: number;
  /** Response status sent. */
  status: number;
  /** True once the response was completely written. */
  completed: boolean;
  /** True when the client connection closed before the response was complete. */
  closedEarly: boolean;
}

export interface UpstreamOptions {
  readonly host?: string;
  readonly port?: number;
  /** Keys accepted; default: any non-empty credential is accepted. */
  readonly keys?: readonly string[];
  /** Number of content deltas in a streamed answer (default 3). */
  readonly chunks?: number;
  /** Awaited before writing stream delta number `index` (lets a test interleave with the client). */
  readonly beforeEvent?: (index: number, record: UpstreamRecord) => Promise<void> | void;
  /** Reflects the received credential in a response header, like a buggy passthrough would. */
  readonly echoCredential?: boolean;
  /** Handle a request yourself (return true), after the body was read and recorded. */
  readonly override?: (record: UpstreamRecord, req: IncomingMessage, res: ServerResponse) => boolean;
}

export interface RunningUpstream {
  /** `http://127.0.0.1:<port>`: the origin to put in a key file's baseUrl (plus the API prefix). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly requests: UpstreamRecord[];
  /** Resolves when a recorded request satisfies `pred` (polls cheaply), rejects after `timeoutMs`. */
  waitFor(pred: (r: UpstreamRecord) => boolean, timeoutMs?: number): Promise<UpstreamRecord>;
  close(): Promise<void>;
}

export const CREDENTIAL_HEADER_NAMES = [
  'authorization',
  'x-api-key',
  'x-goog-api-key',
  'api-key',
  'proxy-authorization',
];

export interface Provider {
  readonly name: string;
  /** Where this provider reads its key from the record; null when none was given. */
  credential(record: UpstreamRecord): string | null;
  /** Provider-shaped error body for a missing/invalid key. */
  authError(): { status: number; body: unknown };
  notFound(): { status: number; body: unknown };
  handle(ctx: HandlerContext): Promise<void> | void;
  readonly echoHeader: string;
}

export interface HandlerContext {
  readonly record: UpstreamRecord;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly options: UpstreamOptions;
}

const MAX_JSON = 1024 * 1024;

export async function startUpstream(
  provider: Provider,
  options: UpstreamOptions = {},
): Promise<RunningUpstream> {
  const requests: UpstreamRecord[] = [];
  const sockets = new Set<Socket>();
  const server = createServer(async (req, res) => {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const credentials: { where: string; value: string }[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const n = req.rawHeaders[i]!.toLowerCase();
      if (CREDENTIAL_HEADER_NAMES.includes(n)) credentials.push({ where: n, value: req.rawHeaders[i + 1]! });
    }
    const search = q === -1 ? '' : rawUrl.slice(q + 1);
    for (const [k, v] of new URLSearchParams(search))
      if (k.toLowerCase() === 'key') credentials.push({ where: '?key', value: v });
    const record: UpstreamRecord = {
      method: req.method ?? 'GET',
      path: q === -1 ? rawUrl : rawUrl.slice(0, q),
      search,
      headers: { ...req.headers },
      credentials,
      bodyBytes: 0,
      bodySha256: '',
      json: undefined,
      eventsWritten: 0,
      status: 0,
      completed: false,
      closedEarly: false,
    };
    requests.push(record);
    res.on('close', () => {
      if (!res.writableFinished) record.closedEarly = true;
    });
    res.on('finish', () => {
      record.completed = true;
    });
    const hash = createHash('sha256');
    const small: Buffer[] = [];
    try {
      for await (const chunk of req) {
        const b: Buffer = chunk;
        record.bodyBytes += b.length;
        hash.update(b);
        if (record.bodyBytes <= MAX_JSON) small.push(b);
      }
    } catch {
      record.closedEarly = true;
      return;
    }
    record.bodySha256 = hash.digest('hex');
    if (
      record.bodyBytes > 0 &&
      record.bodyBytes <= MAX_JSON &&
      /json/.test(String(req.headers['content-type']))
    ) {
      try {
        record.json = JSON.parse(Buffer.concat(small).toString('utf8'));
      } catch {
        record.json = undefined;
      }
    }
    if (options.echoCredential) {
      const c = provider.credential(record);
      if (c !== null) res.setHeader(provider.echoHeader, c);
    }
    if (options.override?.(record, req, res)) return;
    const key = provider.credential(record);
    if (key === null || key === '' || (options.keys && !options.keys.includes(key))) {
      const e = provider.authError();
      sendJson(res, record, e.status, e.body);
      return;
    }
    try {
      await provider.handle({ record, req, res, options });
    } catch {
      res.destroy();
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: options.host ?? '127.0.0.1', port: options.port ?? 0 }, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.address;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`,
    host,
    port: addr.port,
    requests,
    waitFor(pred, timeoutMs = 10_000) {
      return poll(
        `a matching request at the ${provider.name} upstream`,
        () => requests.find(pred),
        timeoutMs,
        {
          intervalMs: 20,
          failOnError: true,
        },
      );
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

export function sendJson(res: ServerResponse, record: UpstreamRecord, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  record.status = status;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Starts an SSE response: headers flushed at once, as the real APIs do. */
export function startSse(
  res: ServerResponse,
  record: UpstreamRecord,
  extra: Record<string, string> = {},
): void {
  record.status = 200;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    ...extra,
  });
  res.flushHeaders();
}

/** Writes one SSE frame and waits for the socket to take it (backpressure honoured). */
export async function writeSse(res: ServerResponse, frame: string): Promise<void> {
  if (res.destroyed) throw new Error('client gone');
  if (!res.write(frame)) {
    await new Promise<void>((resolve, reject) => {
      res.once('drain', resolve);
      res.once('close', () => reject(new Error('client gone')));
    });
  }
}

/** Writes `count` deltas, calling the test hook before each. */
export async function streamDeltas(
  ctx: HandlerContext,
  count: number,
  frame: (index: number) => string,
): Promise<void> {
  for (let i = 0; i < count; i++) {
    await ctx.options.beforeEvent?.(i, ctx.record);
    await writeSse(ctx.res, frame(i));
    ctx.record.eventsWritten++;
  }
}

/** A field of a parsed JSON object body, without trusting its shape. */
export function jsonField(v: unknown, key: string): unknown {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)[key]
    : undefined;
}
