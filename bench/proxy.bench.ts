// Benchmark of the host-side proxy (run by `make bench`, never by the tests).
//
// One machine, one run, one local upstream (a separate node process), three ways in:
//   direct  → upstream
//   proxy   → dist/proxy/cannes-proxy.mjs, as the operator's unit runs it (its threads and
//             environment) → upstream
//   nginx   → Debian nginx (temp config, foreground child, as many workers as the proxy has
//             threads, keep-alive upstream pool, header injection, buffering off) → upstream
// and, when the proxy runs more than one thread, nginx with one worker for reference
// (throughput only).
// Measures: requests/s for small JSON at 64 connections (wrk) and the CPU each target's own
// processes spend per request, latency at 1 connection (added p50/p99 vs direct, exact
// client), SSE per-chunk delay (upstream stamps each chunk, the client subtracts), RSS with
// 1000 open streams. Writes bench/results/proxy.json and the table between the markers in
// docs/proxy.md and README.md.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROXY_ENVIRONMENT, PROXY_NODE_FLAGS, PROXY_THREADS } from '../operator/host/proxy-unit.ts';
import { KeyScrubber, type ScrubState } from '../proxy/scrub.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BUNDLE = join(ROOT, 'dist/proxy/cannes-proxy.mjs');
/** Rounds per target: throughput takes the best, latency and SSE delay the median. */
const ROUNDS = 5;
/** A typical Anthropic SSE event: ends with a blank line, as every SSE event does. */
const SSE_EVENT =
  'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" streamed tokens"}}\n\n';
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// (A class, unlike a function, must be declared before the role code below runs.)
/** One kept-alive connection to `url` that times one request at a time, write to last body byte. */
class TimedConnection {
  readonly #url: URL;
  readonly #request: Buffer;
  #socket: Socket | null = null;
  #buf: Buffer = Buffer.alloc(0);
  #t0 = 0;
  #done: ((ms: number) => void) | null = null;
  #fail: ((err: Error) => void) | null = null;

  constructor(url: URL) {
    this.#url = url;
    const body = '{"model":"gpt-fake-1","messages":[{"role":"user","content":"hi"}]}';
    this.#request = Buffer.from(
      `POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
        `Authorization: Bearer proxy-managed\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
  }

  /** Resolves with the request's latency in ms. */
  time(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#done = resolve;
      this.#fail = reject;
      if (this.#socket === null) this.#open();
      else this.#send();
    });
  }

  close(): void {
    this.#socket?.destroy();
    this.#socket = null;
  }

  #open(): void {
    const socket = connect(Number(this.#url.port), this.#url.hostname);
    this.#socket = socket;
    this.#buf = Buffer.alloc(0);
    socket.setNoDelay(true);
    socket.on('connect', () => this.#send());
    socket.on('error', (err) => this.#fail?.(err));
    socket.on('close', () => {
      // A connection this side closed (after `connection: close`) is no longer #socket.
      if (this.#socket !== socket) return;
      this.#socket = null;
      if (this.#done) this.#fail?.(new Error(`${this.#url}: connection closed mid-request`));
    });
    socket.on('data', (d: Buffer) => this.#onData(socket, d));
  }

  #send(): void {
    this.#t0 = performance.now();
    this.#socket!.write(this.#request);
  }

  #onData(socket: Socket, d: Buffer): void {
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    const h = this.#buf.indexOf('\r\n\r\n');
    if (h === -1) return;
    const head = this.#buf.subarray(0, h).toString('latin1');
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head);
    if (!head.startsWith('HTTP/1.1 200') || !cl) {
      this.#fail?.(new Error(`${this.#url}: ${head.split('\r\n')[0]}${cl ? '' : ', no content-length'}`));
      return;
    }
    const need = h + 4 + Number(cl[1]);
    if (this.#buf.length < need) return;
    const ms = performance.now() - this.#t0;
    this.#buf = this.#buf.subarray(need);
    // nginx closes a keep-alive connection after 1000 requests (keepalive_requests), as wrk
    // sees too: the next request goes on a new connection, timed from its write as always.
    if (/\r\nconnection: *close/i.test(head)) {
      socket.destroy();
      this.#socket = null;
    }
    const done = this.#done!;
    this.#done = null;
    this.#fail = null;
    done(ms);
  }
}

// ---------------------------------------------------------------- upstream (child role)
if (process.argv[2] === '--role' && process.argv[3] === 'upstream') {
  const small = JSON.stringify({
    id: 'chatcmpl-bench',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-fake-1',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: 'Hello from the benchmark upstream.' },
        finish_reason: 'stop',
      },
    ],
    usage: { prompt_tokens: 10, completion_tokens: 7, total_tokens: 17 },
  });
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    req.resume();
    req.on('end', () => {
      if (url.startsWith('/v1/chat/completions')) {
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(small),
        });
        res.end(small);
      } else if (url.startsWith('/v1/stream')) {
        // ?n=chunks&gap=ms: each chunk carries the wall-clock time it was written.
        const q = new URLSearchParams(url.slice(url.indexOf('?') + 1));
        const n = Number(q.get('n') ?? 100);
        const gap = Number(q.get('gap') ?? 10);
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.flushHeaders();
        let i = 0;
        const tick = () => {
          if (res.destroyed) return;
          if (i++ >= n) {
            res.end('data: [DONE]\n\n');
            return;
          }
          res.write(`data: {"t":${now().toFixed(3)}}\n\n`);
          setTimeout(tick, gap);
        };
        tick();
      } else if (url.startsWith('/v1/hold')) {
        // An idle open stream (a slow reasoning model): a ping every 5 s until the client leaves.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(': open\n\n');
        const t = setInterval(() => res.write('event: ping\ndata: {}\n\n'), 5000);
        res.on('close', () => clearInterval(t));
      } else {
        res.writeHead(404);
        res.end();
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${(server.address() as AddressInfo).port}\n`);
  });
} else if (process.argv[2] === '--role' && process.argv[3] === 'latency') {
  // One request at a time, each timed from its write to its last body byte, the targets
  // interleaved. wrk 4.1 is not used for this: at one connection its recorded latencies add
  // up to 2-3x the wall-clock time of the run (impossible for sequential requests), so its
  // tail is wrong.
  const [seconds, ...urls] = [Number(process.argv[4]), ...process.argv.slice(5).map((u) => new URL(u))];
  process.stdout.write(`${JSON.stringify(await interleavedLatency(urls, seconds))}\n`);
} else if (process.argv[2] === '--scrub-only') {
  // The key scrub's own cost, in this process (no other process's noise reaches it): for a
  // machine too loaded for the full run. Prints the load, the rows and the committed run's
  // SSE row beside them; bench/results is left alone.
  const loadBefore = loadAverage();
  const runs = Array.from({ length: 5 }, () => ({
    sse: scrubNs(Buffer.from(SSE_EVENT), 2e6),
    sseKeyStart: scrubNs(Buffer.from(`${SSE_EVENT}s`), 2e6),
    chunk64k: scrubNs(Buffer.alloc(65536, 'a'), 2e4),
  }));
  const med = (k: keyof (typeof runs)[number]) => median(runs.map((r) => r[k]));
  process.stdout.write(
    `${JSON.stringify(
      {
        load_before: loadBefore,
        load_after: loadAverage(),
        scrub_ns_per_sse_chunk: med('sse'),
        scrub_ns_per_sse_chunk_ending_with_key_start: med('sseKeyStart'),
        scrub_ns_per_64k_chunk: med('chunk64k'),
        runs,
        previous: previousRun(),
      },
      null,
      2,
    )}\n`,
  );
} else {
  await main();
}

// ---------------------------------------------------------------- orchestration
interface Target {
  readonly name: 'direct' | 'proxy' | 'nginx' | 'nginx1';
  readonly base: string;
  readonly pid: () => number[];
}

async function main(): Promise<void> {
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} missing: run make build first`);
  // Before the bench adds its own load: what else the machine was doing.
  const loadAtStart = loadAverage();
  // The run this one replaces, to show what changed since (the key scrub's SSE cost).
  const previous = previousRun();
  const tmp = mkdtempSync(join(tmpdir(), 'cannes-proxy-bench-'));
  const children: ChildProcess[] = [];
  const groups: number[] = [];
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    // nginx's workers outlive a SIGKILLed master: kill its whole process group.
    for (const g of groups) {
      try {
        process.kill(-g, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  // Ctrl-C no longer reaches nginx (own group): exit through the cleanup instead.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
  try {
    const upstream = spawn(process.execPath, [fileURLToPath(import.meta.url), '--role', 'upstream'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(upstream);
    const upPort = Number(await firstLine(upstream));

    const proxyPort = await freePort();
    const keyFile = join(tmp, 'keys.json');
    writeFileSync(
      keyFile,
      JSON.stringify({
        version: 1,
        keys: {
          bench: { provider: 'openai', apiKey: 'sk-bench-fake', baseUrl: `http://127.0.0.1:${upPort}/v1` },
        },
      }),
      { mode: 0o600 },
    );
    chmodSync(keyFile, 0o600);
    // Default log level (one JSON line per request) to /dev/null: the logging cost is paid.
    // The environment of the operator's unit (V8 flags, malloc arenas).
    const proxy = spawn(
      process.execPath,
      [
        ...PROXY_NODE_FLAGS,
        BUNDLE,
        '--keys',
        keyFile,
        '--listen',
        `127.0.0.1:${proxyPort}`,
        '--allow',
        '127.0.0.1/32',
        '--metrics',
        'off',
        '--threads',
        String(PROXY_THREADS),
        // The bench upstream's SSE and open-stream paths are not inference endpoints of the
        // allow list; /chat/completions still goes through the list's check.
        '--allow-path-prefix',
        '/stream',
        '--allow-path-prefix',
        '/hold',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...PROXY_ENVIRONMENT } },
    );
    children.push(proxy);

    // nginx with as many workers as the proxy has threads: the equivalent configuration.
    const nginxPort = await freePort();
    const nginx = startNginx(tmp, upPort, nginxPort, PROXY_THREADS, 'nginx');
    children.push(nginx);
    groups.push(nginx.pid!);
    const targets: Target[] = [
      { name: 'direct', base: `http://127.0.0.1:${upPort}/v1`, pid: () => [upstream.pid!] },
      { name: 'proxy', base: `http://127.0.0.1:${proxyPort}/proxy/bench`, pid: () => [proxy.pid!] },
      { name: 'nginx', base: `http://127.0.0.1:${nginxPort}/proxy/bench`, pid: () => nginxPids(nginx.pid!) },
    ];
    if (PROXY_THREADS > 1) {
      const port1 = await freePort();
      const nginx1 = startNginx(tmp, upPort, port1, 1, 'nginx1');
      children.push(nginx1);
      groups.push(nginx1.pid!);
      targets.push({
        name: 'nginx1',
        base: `http://127.0.0.1:${port1}/proxy/bench`,
        pid: () => nginxPids(nginx1.pid!),
      });
    }
    await Promise.all(
      targets.slice(1).map((t) => waitHttp(Number(new URL(t.base).port), '/proxy/bench/chat/completions')),
    );
    const duration = Number(process.env['BENCH_SECONDS'] ?? 10);
    const luaFile = join(tmp, 'post.lua');
    writeFileSync(
      luaFile,
      `wrk.method = "POST"\nwrk.body = '{"model":"gpt-fake-1","messages":[{"role":"user","content":"hi"}]}'\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer proxy-managed"\n`,
    );

    const results: Record<string, Record<string, number>> = {};
    for (const t of targets) results[t.name] = {};
    // Memory first, on fresh processes: 1000 open (idle) streams, one connection each.
    for (const t of targets) {
      if (t.name === 'direct' || t.name === 'nginx1') continue;
      const rss = await rssWithStreams(`${t.base}/hold`, 1000, t.pid);
      results[t.name]!['rss_1000_streams_mb'] = rss.after;
      results[t.name]!['rss_idle_mb'] = rss.before;
      console.log(
        `${t.name}: RSS idle ${rss.before.toFixed(1)} MB, with 1000 open streams ${rss.after.toFixed(1)} MB`,
      );
    }
    // Warm-up, then interleave rounds so background load hits every target alike. wrk gives
    // the throughput only: its latency histogram is not trusted (see the latency role above).
    for (const t of targets) wrk(`${t.base}/chat/completions`, luaFile, 16, 2);
    // Latency and SSE delay are measured on direct, proxy and nginx interleaved (request by
    // request, burst by burst), so that each round's added latency compares the targets
    // under the same load; the table gives the median round. Throughput: best round.
    const paired = targets.filter((t) => t.name !== 'nginx1');
    const perRound: Record<string, Record<string, number>[]> = Object.fromEntries(
      targets.map((t) => [t.name, []]),
    );
    for (let r = 0; r < ROUNDS; r++) {
      const round: Record<string, Record<string, number>> = {};
      for (const t of targets) {
        const cpu0 = cpuSeconds(t.pid());
        const hi = wrk(`${t.base}/chat/completions`, luaFile, 64, duration);
        const cpuUs = ((cpuSeconds(t.pid()) - cpu0) * 1e6) / hi.requests;
        const acc = results[t.name]!;
        acc['rps'] = Math.max(acc['rps'] ?? 0, hi.rps);
        acc['cpu_us_per_req'] = min(acc['cpu_us_per_req'], cpuUs);
        round[t.name] = { rps: Math.round(hi.rps), cpu_us_per_req: Math.round(cpuUs) };
      }
      const lo = await latencyRun(
        paired.map((t) => `${t.base}/chat/completions`),
        Math.max(3, duration / 2) * paired.length,
      );
      const sse = await sseInterleaved(
        paired.map((t) => `${t.base}/stream`),
        5,
      );
      paired.forEach((t, i) => {
        Object.assign(round[t.name]!, {
          c1_n: lo[i]!.n,
          c1_p50_ms: lo[i]!.p50,
          c1_p99_ms: lo[i]!.p99,
          sse_n: sse[i]!.count,
          sse_p50_ms: sse[i]!.p50,
          sse_p99_ms: sse[i]!.p99,
        });
      });
      for (const t of targets) {
        const x = round[t.name]!;
        perRound[t.name]!.push(x);
        console.log(
          `round ${r + 1} ${t.name}: ${x['rps']} req/s @64 (${x['cpu_us_per_req']} µs CPU/req)` +
            (x['c1_n'] === undefined
              ? ''
              : `, p50/p99 @1 = ${x['c1_p50_ms']!.toFixed(3)}/${x['c1_p99_ms']!.toFixed(3)} ms (${x['c1_n']} req), ` +
                `SSE p50/p99 = ${x['sse_p50_ms']!.toFixed(3)}/${x['sse_p99_ms']!.toFixed(3)} ms (${x['sse_n']} chunks)`),
        );
      }
    }
    // Per target: the median round. Added: the median over rounds of (target - direct) in the
    // same round.
    const medianOf = (name: string, key: string) => median(perRound[name]!.map((x) => x[key]!));
    const addedOf = (name: string, key: string) =>
      median(perRound[name]!.map((x, i) => x[key]! - perRound['direct']![i]![key]!));
    for (const t of paired) {
      for (const key of ['c1_p50_ms', 'c1_p99_ms', 'sse_p50_ms', 'sse_p99_ms']) {
        results[t.name]![key] = medianOf(t.name, key);
      }
    }
    for (const t of targets) {
      if (t.name === 'direct' || t.name === 'nginx1') continue;
      results[t.name]!['rss_after_load_mb'] = rssMb(t.pid());
    }

    const d = results['direct']!;
    const p = results['proxy']!;
    const n = results['nginx']!;
    const summary = {
      throughput_vs_nginx: p['rps']! / n['rps']!,
      // The same ratio taken within each round, then the median: how much of the best
      // round's margin every round keeps (the target is judged on the best round).
      throughput_vs_nginx_round_median: median(
        perRound['proxy']!.map((x, i) => x['rps']! / perRound['nginx']![i]!['rps']!),
      ),
      throughput_vs_direct: p['rps']! / d['rps']!,
      nginx_throughput_vs_direct: n['rps']! / d['rps']!,
      added_p50_ms: addedOf('proxy', 'c1_p50_ms'),
      added_p99_ms: addedOf('proxy', 'c1_p99_ms'),
      nginx_added_p50_ms: addedOf('nginx', 'c1_p50_ms'),
      nginx_added_p99_ms: addedOf('nginx', 'c1_p99_ms'),
      sse_added_p99_ms: addedOf('proxy', 'sse_p99_ms'),
      nginx_sse_added_p99_ms: addedOf('nginx', 'sse_p99_ms'),
      rss_1000_streams_mb: p['rss_1000_streams_mb']!,
      nginx_rss_1000_streams_mb: n['rss_1000_streams_mb']!,
      ...(results['nginx1'] ? { throughput_vs_nginx_one_worker: p['rps']! / results['nginx1']['rps']! } : {}),
      // The response scrub alone, in this process: ns per chunk with a 108-byte key.
      scrub_ns_per_sse_chunk: scrubNs(Buffer.from(SSE_EVENT), 2e6),
      scrub_ns_per_64k_chunk: scrubNs(Buffer.alloc(65536, 'a'), 2e4),
      ...(previous
        ? {
            previous_sse_added_p99_ms: previous.sseAddedP99,
            sse_added_p99_vs_previous_ms: addedOf('proxy', 'sse_p99_ms') - previous.sseAddedP99,
          }
        : {}),
    };
    const targetsMet = {
      throughput_ge_0_6x_nginx: summary.throughput_vs_nginx >= 0.6,
      added_p99_le_1ms: summary.added_p99_ms <= 1,
      sse_added_p99_le_1ms: summary.sse_added_p99_ms <= 1,
      rss_1000_streams_le_150mb: summary.rss_1000_streams_mb <= 150,
      ...(summary.sse_added_p99_vs_previous_ms === undefined
        ? {}
        : { sse_added_p99_vs_previous_le_0_1ms: summary.sse_added_p99_vs_previous_ms <= 0.1 }),
    };
    const load = loadAverage();
    const out = {
      date: new Date().toISOString(),
      machine: {
        cpus: (await import('node:os')).cpus().length,
        loadavg_at_start: loadAtStart,
        loadavg: load,
        node: process.version,
        nginx: nginxVersion(),
      },
      method: {
        duration_s: duration,
        proxy_environment: PROXY_ENVIRONMENT,
        proxy_node_flags: PROXY_NODE_FLAGS,
        proxy_threads: PROXY_THREADS,
        nginx_workers: PROXY_THREADS,
        rounds: ROUNDS,
        load_generator:
          'wrk 4 (throughput), an exact one-connection client in its own process (latency), node http (SSE, open streams)',
        note: 'throughput: best round per target (summary.throughput_vs_nginx_round_median: the median over rounds of proxy/nginx within a round); latency at 1 connection and SSE delay: direct, proxy and nginx interleaved, median round per target, added = median over rounds of (target - direct); CPU per request = utime+stime of the target process(es) during the 64-connection run / requests',
      },
      results,
      per_round: perRound,
      summary,
      targets_met: targetsMet,
    };
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(join(ROOT, 'bench/results/proxy.json'), `${JSON.stringify(out, null, 2)}\n`);
    const table = markdownTable(out.results, summary, targetsMet, loadAtStart, load, previous?.date);
    console.log(`\n${table}`);
    for (const [file, start, stop] of [
      ['docs/proxy.md', '<!-- bench:start -->', '<!-- bench:end -->'],
      ['README.md', '<!-- proxy-bench:start -->', '<!-- proxy-bench:end -->'],
    ] as const) {
      const path = join(ROOT, file);
      if (!existsSync(path)) continue;
      const text = readFileSync(path, 'utf8');
      const a = text.indexOf(start);
      const b = text.indexOf(stop);
      if (a !== -1 && b > a) writeFileSync(path, `${text.slice(0, a)}${start}\n${table}\n${text.slice(b)}`);
    }
  } finally {
    cleanup();
  }
}

/** ns per `KeyScrubber.push` of `chunk` (no key in it), after a warm-up. */
function scrubNs(chunk: Buffer, n: number): number {
  const scrubber = new KeyScrubber(`sk-ant-api03-${'x'.repeat(95)}`);
  const state: ScrubState = { carry: null };
  for (let i = 0; i < n / 10; i++) scrubber.push(state, chunk, false);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) scrubber.push(state, chunk, false);
  return Number(process.hrtime.bigint() - t0) / n;
}

/** The committed run's date and added SSE p99, if there is one. */
function previousRun(): { date: string; sseAddedP99: number } | null {
  try {
    const prev = JSON.parse(readFileSync(join(ROOT, 'bench/results/proxy.json'), 'utf8'));
    const v = prev?.summary?.sse_added_p99_ms;
    return typeof v === 'number' && typeof prev.date === 'string'
      ? { date: prev.date, sseAddedP99: v }
      : null;
  } catch {
    return null;
  }
}

/** The 1, 5 and 15 minute load averages, as /proc gives them. */
function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function min(a: number | undefined, b: number): number {
  return a === undefined ? b : Math.min(a, b);
}

function fmt(v: number | undefined, digits = 2): string {
  return v === undefined ? 'n/a' : v.toFixed(digits);
}

function delta(v: number | undefined): string {
  return v === undefined ? 'n/a' : `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(3)} ms`;
}

function markdownTable(
  r: Record<string, Record<string, number>>,
  s: Record<string, number>,
  met: Record<string, boolean>,
  loadAtStart: string,
  load: string,
  previousDate: string | undefined,
): string {
  const d = r['direct']!;
  const p = r['proxy']!;
  const n = r['nginx']!;
  const n1 = r['nginx1'];
  const ok = (b: boolean | undefined) => (b ? 'met' : '**missed**');
  return [
    `Measured ${new Date().toISOString().slice(0, 16)}Z on this 2-core shared machine (load average ${loadAtStart} before the run, ${load} after it); numbers move with the load, the ratios less so.`,
    `The proxy runs as the operator's unit runs it: ${PROXY_THREADS} thread(s), ${PROXY_NODE_FLAGS.join(' ')}, ${Object.entries(
      PROXY_ENVIRONMENT,
    )
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}; nginx with as many workers.`,
    '',
    '| metric | direct | cannes-proxy | nginx | proxy vs direct | proxy vs nginx | target |',
    '|---|---:|---:|---:|---:|---:|---|',
    `| req/s, small JSON, 64 connections | ${fmt(d['rps'], 0)} | ${fmt(p['rps'], 0)} | ${fmt(n['rps'], 0)} | ${fmt(s['throughput_vs_direct'])}x | ${fmt(s['throughput_vs_nginx'])}x | >= 0.6x nginx: ${ok(met['throughput_ge_0_6x_nginx'])} |`,
    `| req/s ratio within each round, median of ${ROUNDS} rounds | | | | | ${fmt(s['throughput_vs_nginx_round_median'])}x | |`,
    ...(n1
      ? [
          `| req/s, nginx with one worker (reference) | | | ${fmt(n1['rps'], 0)} | | ${fmt(s['throughput_vs_nginx_one_worker'])}x | |`,
        ]
      : []),
    `| CPU per request at 64 connections (µs, the target's own processes) | ${fmt(d['cpu_us_per_req'], 0)} | ${fmt(p['cpu_us_per_req'], 0)} | ${fmt(n['cpu_us_per_req'], 0)} | | ${fmt(p['cpu_us_per_req']! / n['cpu_us_per_req']!)}x | |`,
    `| latency p50, 1 connection (ms) | ${fmt(d['c1_p50_ms'], 3)} | ${fmt(p['c1_p50_ms'], 3)} | ${fmt(n['c1_p50_ms'], 3)} | ${delta(s['added_p50_ms'])} | nginx ${delta(s['nginx_added_p50_ms'])} | |`,
    `| latency p99, 1 connection (ms) | ${fmt(d['c1_p99_ms'], 3)} | ${fmt(p['c1_p99_ms'], 3)} | ${fmt(n['c1_p99_ms'], 3)} | ${delta(s['added_p99_ms'])} | nginx ${delta(s['nginx_added_p99_ms'])} | added p99 <= 1 ms: ${ok(met['added_p99_le_1ms'])} |`,
    `| SSE per-chunk delay p99 (ms) | ${fmt(d['sse_p99_ms'], 3)} | ${fmt(p['sse_p99_ms'], 3)} | ${fmt(n['sse_p99_ms'], 3)} | ${delta(s['sse_added_p99_ms'])} | nginx ${delta(s['nginx_sse_added_p99_ms'])} | added p99 <= 1 ms: ${ok(met['sse_added_p99_le_1ms'])} |`,
    `| RSS with 1000 open streams (MB) | | ${fmt(p['rss_1000_streams_mb'], 1)} | ${fmt(n['rss_1000_streams_mb'], 1)} | | ${fmt(p['rss_1000_streams_mb']! / n['rss_1000_streams_mb']!)}x | <= 150 MB: ${ok(met['rss_1000_streams_le_150mb'])} |`,
    `| RSS idle, fresh (MB) | | ${fmt(p['rss_idle_mb'], 1)} | ${fmt(n['rss_idle_mb'], 1)} | | | |`,
    `| RSS after the load runs (MB) | | ${fmt(p['rss_after_load_mb'], 1)} | ${fmt(n['rss_after_load_mb'], 1)} | | | |`,
    ...(previousDate
      ? [
          `| added SSE p99 against the previous run (${previousDate.slice(0, 16)}Z: ${delta(s['previous_sse_added_p99_ms'])}) | | | | ${delta(s['sse_added_p99_vs_previous_ms'])} | | <= +0.1 ms: ${ok(met['sse_added_p99_vs_previous_le_0_1ms'])} |`,
        ]
      : []),
    `| key scrub alone, per chunk (ns, in-process: SSE event / 64 KiB) | | ${fmt(s['scrub_ns_per_sse_chunk'], 0)} / ${fmt(s['scrub_ns_per_64k_chunk'], 0)} | | | | |`,
  ].join('\n');
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (b: Buffer) => {
      buf += b.toString();
      const i = buf.indexOf('\n');
      if (i !== -1) resolve(buf.slice(0, i));
    });
    child.on('exit', (c) => reject(new Error(`child exited ${c}`)));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitHttp(port: number, path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path, method: 'POST' }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.end('{}');
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing answers on ${port}`);
}

function startNginx(tmp: string, upPort: number, port: number, workers: number, tag: string): ChildProcess {
  const prefix = join(tmp, tag);
  for (const d of ['', 'body', 'proxy', 'fastcgi', 'uwsgi', 'scgi', 'logs'])
    mkdirSync(join(prefix, d), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  // The equivalent of the proxy: as many workers as it has threads, keep-alive pool
  // to the upstream, client credentials replaced by the real one, no buffering either way,
  // one access log line per request (the proxy logs one too).
  writeFileSync(
    conf,
    `daemon off;
master_process on;
worker_processes ${workers};
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log /dev/null;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  upstream llm { server 127.0.0.1:${upPort}; keepalive 128; }
  server {
    listen 127.0.0.1:${port} backlog=4096;
    allow 127.0.0.1; deny all;
    location /proxy/bench/ {
      proxy_pass http://llm/v1/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer sk-bench-fake";
      proxy_set_header X-Api-Key "";
      proxy_set_header X-Goog-Api-Key "";
      proxy_set_header Api-Key "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
      client_max_body_size 64m;
    }
  }
}
`,
  );
  // Its own process group (detached), so that cleanup reaches the workers too.
  return spawn('nginx', ['-p', prefix, '-e', join(prefix, 'logs/error.log'), '-c', conf], {
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
  });
}

function nginxPids(master: number): number[] {
  const kids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(master)], { encoding: 'utf8' })
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => n > 0);
  return [master, ...kids];
}

function nginxVersion(): string {
  // nginx prints its version on stderr.
  const r = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  return (r.stderr || r.stdout || 'unknown').trim();
}

function wrk(
  url: string,
  lua: string,
  connections: number,
  seconds: number,
): { rps: number; requests: number } {
  const text = execFileSync(
    'wrk',
    ['-t', connections > 1 ? '2' : '1', '-c', String(connections), '-d', `${seconds}s`, '-s', lua, url],
    { encoding: 'utf8' },
  );
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? 'NaN');
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  if (non2xx) throw new Error(`${url}: ${non2xx[1]} non-2xx responses`);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? 'NaN');
  return { rps, requests };
}

/** Runs the exact one-connection client in its own process (the orchestrator stays out of its way). */
async function latencyRun(
  urls: string[],
  seconds: number,
): Promise<{ n: number; p50: number; p99: number }[]> {
  const child = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), '--role', 'latency', String(seconds), ...urls],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  return JSON.parse(await firstLine(child));
}

/**
 * One request at a time, over one connection per target, the targets taken in a new random
 * order each cycle: whatever else the machine is doing at a moment, every target sees it alike.
 */
async function interleavedLatency(urls: URL[], seconds: number) {
  const conns = urls.map((u) => new TimedConnection(u));
  const lat: number[][] = urls.map(() => []);
  const order = urls.map((_, i) => i);
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    shuffle(order);
    for (const i of order) lat[i]!.push(await conns[i]!.time());
  }
  for (const c of conns) c.close();
  return lat.map((l) => {
    l.sort((a, b) => a - b);
    return { n: l.length, p50: percentile(l, 50), p99: percentile(l, 99) };
  });
}

function shuffle<T>(a: T[]): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
}

/** utime + stime of the processes, from /proc/<pid>/stat (clock ticks of 10 ms). */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / 100;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * SSE per-chunk delay, the targets interleaved: `cycles` times, in a new random order each
 * time, every target gets 20 concurrent streams of 100 chunks 10 ms apart. The 20 streams
 * tick together, so one stall anywhere delays 20 samples at once: p99 is the ~5th-worst of
 * a target's 500 ticks in a round (the worst of 100 in the first version of this loop,
 * which made it one event).
 */
async function sseInterleaved(bases: string[], cycles: number) {
  const delays: number[][] = bases.map(() => []);
  const order = bases.map((_, i) => i);
  for (let c = 0; c < cycles; c++) {
    shuffle(order);
    for (const i of order) delays[i]!.push(...(await sseDelays(bases[i]!, 20, 100, 10)));
  }
  return delays.map((d) => {
    d.sort((a, b) => a - b);
    return { p50: percentile(d, 50), p99: percentile(d, 99), count: d.length };
  });
}

/** `streams` concurrent SSE streams of `n` chunks `gap` ms apart; delay = receive time - write time. */
async function sseDelays(base: string, streams: number, n: number, gap: number): Promise<number[]> {
  const delays: number[] = [];
  await Promise.all(
    Array.from(
      { length: streams },
      () =>
        new Promise<void>((resolve, reject) => {
          const req = request(`${base}?n=${n}&gap=${gap}`, { method: 'POST', agent: false }, (res) => {
            let buf = '';
            res.setEncoding('utf8');
            res.on('data', (s: string) => {
              const t = now();
              buf += s;
              let i = buf.indexOf('\n\n');
              while (i !== -1) {
                const frame = buf.slice(0, i);
                buf = buf.slice(i + 2);
                const m = /"t":([\d.]+)/.exec(frame);
                if (m) delays.push(t - Number(m[1]));
                i = buf.indexOf('\n\n');
              }
            });
            res.on('end', () => resolve());
            res.on('error', reject);
          });
          req.on('error', reject);
          req.end('{}');
        }),
    ),
  );
  return delays;
}

function rssMb(pids: number[]): number {
  let kb = 0;
  for (const pid of pids) {
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    kb += Number(/VmRSS:\s+(\d+)/.exec(st)?.[1] ?? 0);
  }
  return kb / 1024;
}

/** Opens `count` streams (one connection each), waits until all are open, reads the RSS. */
async function rssWithStreams(url: string, count: number, pids: () => number[]) {
  const before = rssMb(pids());
  const reqs: ReturnType<typeof request>[] = [];
  let open = 0;
  for (let i = 0; i < count; i++) {
    const req = request(url, { method: 'POST', agent: false }, (res) => {
      res.once('data', () => open++);
      res.resume();
    });
    req.on('error', () => {});
    req.end('{}');
    reqs.push(req);
    if (i % 100 === 99) await sleep(50);
  }
  const until = Date.now() + 60_000;
  while (open < count && Date.now() < until) await sleep(100);
  if (open < count) throw new Error(`${url}: only ${open}/${count} streams opened`);
  await sleep(2000);
  const after = rssMb(pids());
  for (const r of reqs) r.destroy();
  await sleep(1000);
  return { before, after };
}
