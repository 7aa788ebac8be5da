/**
 * A real Prometheus (Debian's `prometheus` binary) for integration runs: started as a child
 * process on loopback with a temporary config that scrapes the given loopback targets, asked
 * with instant queries, stopped (and its data removed) by `stop()`. `setpriv --pdeathsig KILL`
 * ties it to this process, so it never outlives a killed test run. Also `promtool check metrics`.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { endStdin } from '../../lib/stdin.ts';
import { waitFor } from '../../lib/wait.ts';

export type ScrapeJob = {
  job: string;
  /** host:port on loopback (127.0.0.1, [::1] or localhost). */
  targets: string[];
  metricsPath?: string;
  /** Keep the target's own `namespace`/`job` labels (as the chart's ServiceMonitor does). */
  honorLabels?: boolean;
};

export type PrometheusOptions = {
  jobs: ScrapeJob[];
  /** Scrape and rule evaluation interval (default 1s: tests want answers fast). */
  interval?: string;
  /** Prometheus rule files (e.g. the chart's rendered alert rules). */
  ruleFiles?: string[];
  binary?: string;
  /**
   * Scrape configs taken as they are, after `jobs` (e.g. `kubernetes_sd_configs` against the rig's
   * API server, as the Prometheus Operator generates from a ServiceMonitor): the rig's node, whose
   * pods have their own addresses, scrapes through these.
   */
  scrapeConfigs?: Record<string, unknown>[];
};

export type Sample = { metric: Record<string, string>; value: number };

export type RuleState = { name: string; type: string; health: string; query: string; lastError?: string };

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function assertLoopback(target: string): void {
  const host = target.replace(/:\d+$/, '');
  if (!['127.0.0.1', '[::1]', 'localhost'].includes(host)) {
    throw new Error(`prometheus helper: target ${target} is not on loopback (tests scrape loopback only)`);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Parses the `data.result` of an instant-vector query answer. */
export function parseVector(body: unknown): Sample[] {
  if (!isRecord(body) || body['status'] !== 'success' || !isRecord(body['data'])) {
    throw new Error(`prometheus: query failed: ${JSON.stringify(body).slice(0, 500)}`);
  }
  const { resultType, result } = body['data'];
  if (resultType !== 'vector' || !Array.isArray(result))
    throw new Error(`prometheus: not a vector: ${resultType}`);
  return result.map((r: unknown) => {
    if (!isRecord(r) || !isRecord(r['metric']) || !Array.isArray(r['value']))
      throw new Error('prometheus: bad sample');
    const metric: Record<string, string> = {};
    for (const [k, v] of Object.entries(r['metric'])) if (typeof v === 'string') metric[k] = v;
    return { metric, value: Number(r['value'][1]) };
  });
}

export class Prometheus {
  readonly url: string;
  readonly dir: string;
  readonly #child: ChildProcess;
  readonly #log: () => string;

  constructor(url: string, dir: string, child: ChildProcess, log: () => string) {
    this.url = url;
    this.dir = dir;
    this.#child = child;
    this.#log = log;
  }

  async #get(path: string): Promise<unknown> {
    const res = await fetch(new URL(path, this.url));
    const text = await res.text();
    try {
      return JSON.parse(text);
    } catch {
      throw new Error(`prometheus ${path}: HTTP ${res.status}: ${text.slice(0, 300)}`);
    }
  }

  /** An instant query now. */
  async query(expr: string): Promise<Sample[]> {
    return parseVector(await this.#get(`/api/v1/query?query=${encodeURIComponent(expr)}`));
  }

  /** Polls `expr` until `done` accepts the answer; throws (with the last answer) after `timeoutMs`. */
  waitFor(expr: string, done: (s: Sample[]) => boolean, timeoutMs = 60_000): Promise<Sample[]> {
    let last: Sample[] = [];
    return waitFor(
      `prometheus: ${expr} to settle`,
      async () => {
        last = await this.query(expr);
        return done(last) ? last : undefined;
      },
      timeoutMs,
      { intervalMs: 250, failOnError: true, onTimeout: () => `last answer ${JSON.stringify(last)}` },
    );
  }

  /** Every loaded rule with its health (`ok`, `err`, `unknown` before its first evaluation). */
  async rules(): Promise<RuleState[]> {
    const body = await this.#get('/api/v1/rules');
    const data = isRecord(body) && isRecord(body['data']) ? body['data'] : {};
    const groups = Array.isArray(data['groups']) ? data['groups'] : [];
    return groups.flatMap((g: unknown) => {
      const rules = isRecord(g) && Array.isArray(g['rules']) ? g['rules'] : [];
      return rules.filter(isRecord).map((r) => ({
        name: String(r['name']),
        type: String(r['type']),
        health: String(r['health']),
        query: String(r['query'] ?? ''),
        ...(typeof r['lastError'] === 'string' && r['lastError'] ? { lastError: r['lastError'] } : {}),
      }));
    });
  }

  /** Prometheus's own log so far (warnings and errors). */
  log(): string {
    return this.#log();
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const killed = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Starts Prometheus on a free loopback port and waits until it is ready. */
export async function startPrometheus(opts: PrometheusOptions): Promise<Prometheus> {
  for (const j of opts.jobs) for (const t of j.targets) assertLoopback(t);
  const interval = opts.interval ?? '1s';
  const dir = mkdtempSync(join(tmpdir(), 'cannes-prometheus-'));
  const config = {
    global: { scrape_interval: interval, evaluation_interval: interval, scrape_timeout: interval },
    ...(opts.ruleFiles?.length ? { rule_files: opts.ruleFiles } : {}),
    scrape_configs: opts.jobs.map((j) => ({
      job_name: j.job,
      metrics_path: j.metricsPath ?? '/metrics',
      honor_labels: j.honorLabels ?? false,
      static_configs: [{ targets: j.targets }],
    })),
  };
  config.scrape_configs.push(...((opts.scrapeConfigs ?? []) as typeof config.scrape_configs));
  writeFileSync(join(dir, 'prometheus.yml'), stringify(config));
  let lastError = '';
  // A free port can be taken between probing and binding: try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    let log = '';
    const child = spawn(
      'setpriv',
      [
        '--pdeathsig',
        'KILL',
        '--',
        opts.binary ?? 'prometheus',
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--storage.tsdb.retention.time=1h',
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (d: string) => {
      log = (log + d).slice(-20_000);
    });
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    while (child.exitCode === null && Date.now() < deadline) {
      try {
        const res = await fetch(`${url}/-/ready`);
        if (res.ok) return new Prometheus(url, dir, child, () => log);
      } catch {
        // not listening yet
      }
      await sleep(200);
    }
    child.kill('SIGKILL');
    lastError = log.slice(-2000);
    if (!/address already in use/.test(log)) break;
  }
  rmSync(dir, { recursive: true, force: true });
  throw new Error(`prometheus did not become ready: ${lastError}`);
}

/**
 * `promtool check metrics` on a text exposition: the problems it reports (an empty list means
 * clean). promtool exits 3 on lint problems and prints one per line.
 */
export function checkMetrics(exposition: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'promtool',
      ['check', 'metrics'],
      { encoding: 'utf8', timeout: 60_000 },
      (err, stdout, stderr) => {
        const code: unknown = err ? Reflect.get(err, 'code') : 0;
        if (code !== 0 && code !== 3) {
          reject(new Error(`promtool check metrics: ${err?.message ?? ''} ${stderr}`));
          return;
        }
        const problems = (stdout + stderr)
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean);
        resolve(problems);
      },
    );
    endStdin(child.stdin, exposition);
  });
}
