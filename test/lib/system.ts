/**
 * The whole system on this machine, with real parts only: the rig's kube-apiserver, a
 * Postgres database of its own, the Hetzner simulator whose servers are real hosts (network
 * namespaces, sshd, the docker/systemctl shims), fake LLM upstreams the servers reach, and the
 * operator as a child process. Used by the operator integration test, the end-to-end test and
 * `make dev`. Every secret is a random canary made here, so a test can scan for leaks.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { OPERATOR_RUNTIME_ENV } from '../../operator/config.ts';
import { type Simulator, startSimulator } from '../hcloud-sim/simulator.ts';
import { RealHostProvider } from '../hosts/real-host-provider.ts';
import { freePort } from '../rig/controlplane.ts';
import { createTestDatabase, type TestDatabase } from '../rig/postgres.ts';
import type { Rig } from '../rig/rig.ts';
import { useRig } from '../rig/shared.ts';
import { startControl, type TailnetControl } from '../tailnet/control.ts';
import { anthropic, gemini, openai, type RunningUpstream } from '../upstreams/index.ts';
import {
  cloudTokenSecret,
  llmKeySecret,
  modelKeyManifest,
  TAILNET_AUTH_KEY_LABELS,
  vpsManifest,
} from './manifests.ts';
import { type NodeMirror, startNodeMirror } from './node-mirror.ts';

const run = promisify(execFile);
export const REPO = resolve(import.meta.dirname, '..', '..');

/** Fake upstreams listen here: a root-namespace address the simulated servers route to. */
export const UPSTREAM_IPV4 = '198.19.255.253';

export interface Canaries {
  readonly hcloudToken: string;
  readonly masterKey: string;
  readonly modelKeys: Readonly<Record<'anthropic' | 'openai' | 'google', string>>;
}

export interface OperatorProcess {
  readonly proc: ChildProcess;
  readonly metricsUrl: string;
  /** `http://127.0.0.1:<port>`: its /healthz and /readyz. */
  readonly probesUrl: string;
  readonly logs: string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface System {
  readonly rig: Rig;
  readonly namespace: string;
  readonly db: TestDatabase;
  readonly sim: Simulator;
  readonly hosts: RealHostProvider;
  readonly upstreams: { anthropic: RunningUpstream; openai: RunningUpstream; gemini: RunningUpstream };
  /** The keys each fake upstream accepts (checked per request): a test adds keys it hands over itself. */
  readonly upstreamKeys: { anthropic: string[]; openai: string[]; google: string[] };
  /** Where the servers download the proxy's Node (the operator is started pointing at it). */
  readonly nodeMirror: NodeMirror;
  readonly canaries: Canaries;
  readonly masterKeysFile: string;
  readonly dir: string;
  /**
   * The rig's tailnet control server (startSystem `tailnet: true`), whose CA every simulated
   * server trusts. Auth keys minted through `mintTailnetKey` are remembered for canary scans.
   */
  readonly tailnet: TailnetControl | undefined;
  /** A one-off, pre-authorised key of the rig tailnet (recorded in `tailnetKeys`). */
  mintTailnetKey(tags?: readonly string[]): Promise<string>;
  /** Every tailnet auth key minted so far: secrets a test scans for. */
  readonly tailnetKeys: string[];
  /** Starts an operator process (more than one for the leader-election and crash tests). */
  startOperator(extraArgs?: readonly string[], env?: Record<string, string>): Promise<OperatorProcess>;
  readonly operators: OperatorProcess[];
  kubectl(args: string[], stdin?: string): Promise<string>;
  getJson(kind: string, name: string): Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export { CLOUD_TOKEN_LABELS, LLM_KEY_LABELS, TAILNET_AUTH_KEY_LABELS } from './manifests.ts';

const canary = (prefix: string, bytes = 24) => `${prefix}${randomBytes(bytes).toString('hex')}`;

async function ip(args: string[]): Promise<void> {
  await run('ip', args);
}

export async function startSystem(
  opts: {
    /** Hetzner action durations (one number, or per command: test/hcloud-sim/latencies.ts). */
    actionMs?: number | Record<string, number>;
    /** From a power-on/reset to sshd answering (simulator option bootToSshMs). Default 0. */
    bootToSshMs?: { rescue: number; os: number };
    /** Superuser URL of the Postgres cluster to make the system's database in (default: the shared one). */
    adminDatabaseUrl?: string;
    /** Light servers (benchmarks): see RealHostProviderOptions.standInServices. */
    standInServices?: boolean;
    /**
     * Run the built operator (dist/operator/main.js, what the image runs) instead of the
     * sources: the benchmark measures the memory that ships (the sources carry Node's
     * TypeScript stripper, ~25 MB). Needs `make build`.
     */
    builtOperator?: boolean;
    /**
     * The namespace the operator watches and the objects go in. Default: a random one that the
     * system creates. When given (`make dev`: the examples' own namespace), the caller creates
     * it, as a user applying the manifests would; the system still deletes it at the end.
     */
    namespace?: string;
    /** Start the rig's tailnet control server and trust its CA on every simulated server. */
    tailnet?: boolean;
    /** Further tokens of the simulated project (a fresh token for `recover`). */
    extraTokens?: string[];
  } = {},
): Promise<System> {
  const dir = mkdtempSync(join(tmpdir(), 'cannes-system-'));
  const cleanups: (() => Promise<unknown> | unknown)[] = [
    () => rmSync(dir, { recursive: true, force: true }),
  ];
  const stop = async () => {
    for (const c of cleanups.reverse())
      await Promise.resolve()
        .then(c)
        .catch(() => {});
  };
  try {
    const rig = await useRig();
    await rig.kubectl(['apply', '--server-side', '-f', join(REPO, 'crds')]);
    const namespace = opts.namespace ?? `cannes-${randomBytes(4).toString('hex')}`;
    if (opts.namespace === undefined) await rig.kubectl(['create', 'namespace', namespace]);
    cleanups.push(() => rig.kubectl(['delete', 'namespace', namespace, '--wait=false'], { check: false }));

    const db = await createTestDatabase(opts.adminDatabaseUrl);
    cleanups.push(() => db.drop());

    // The upstreams' address, on loopback of the root namespace; servers route to it via their gateway.
    // Shared by every system on this machine (parallel test files, make dev beside a test) and
    // left in place, like the simulator's `unreachable` route: one system's cleanup must not
    // pull the address from under another's upstreams and Node mirror.
    await ip(['addr', 'add', `${UPSTREAM_IPV4}/32`, 'dev', 'lo']).catch(() => {});

    const modelKeys = {
      anthropic: canary('sk-ant-canary-'),
      openai: canary('sk-canary-'),
      google: canary('AIcanary'),
    };
    const upstreamKeys = {
      anthropic: [modelKeys.anthropic],
      openai: [modelKeys.openai],
      google: [modelKeys.google],
    };
    const upstreams = {
      anthropic: await anthropic.start({ host: UPSTREAM_IPV4, port: 0, keys: upstreamKeys.anthropic }),
      openai: await openai.start({ host: UPSTREAM_IPV4, port: 0, keys: upstreamKeys.openai }),
      gemini: await gemini.start({ host: UPSTREAM_IPV4, port: 0, keys: upstreamKeys.google }),
    };
    for (const u of Object.values(upstreams)) cleanups.push(() => u.close());
    // nodejs.org for the servers: the pinned Node from the npm registry, repacked (make node-mirror).
    const nodeMirror = await startNodeMirror(UPSTREAM_IPV4, { light: opts.standInServices ?? false });
    cleanups.push(() => nodeMirror.close());

    // The docker shim runs the OpenClaw image from the `make openclaw` install in the cache.
    const hosts = new RealHostProvider({ standInServices: opts.standInServices ?? false });
    let tailnet: TailnetControl | undefined;
    if (opts.tailnet) {
      const control = await startControl();
      tailnet = control;
      cleanups.push(() => control.stop());
      // Servers trust the control server as a real server trusts Let's Encrypt: in the CA bundle.
      hosts.trustCa(readFileSync(control.caFile, 'utf8'));
    }
    const tailnetKeys: string[] = [];
    const sim = await startSimulator({
      provider: hosts,
      actionDurationMs: opts.actionMs ?? 200,
      ...(opts.extraTokens ? { extraTokens: opts.extraTokens } : {}),
      ...(opts.bootToSshMs ? { bootToSshMs: opts.bootToSshMs } : {}),
    });
    cleanups.push(() => sim.close());

    const masterKey = randomBytes(32).toString('base64');
    const masterKeysFile = join(dir, 'master-keys');
    writeFileSync(masterKeysFile, `k1 ${masterKey}\n`, { mode: 0o600 });
    const canaries: Canaries = { hcloudToken: sim.token.reveal(), masterKey, modelKeys };

    const operators: OperatorProcess[] = [];
    cleanups.push(async () => {
      for (const o of operators) await o.stop('SIGKILL');
    });

    const kubectl = async (args: string[], stdin?: string) =>
      (await rig.kubectl(['-n', namespace, ...args], stdin === undefined ? {} : { stdin })).stdout;

    const system: System = {
      rig,
      namespace,
      db,
      sim,
      hosts,
      upstreams,
      upstreamKeys,
      nodeMirror,
      canaries,
      masterKeysFile,
      dir,
      tailnet,
      tailnetKeys,
      async mintTailnetKey(tags = []) {
        if (!tailnet) throw new Error('startSystem({ tailnet: true }) starts the tailnet');
        const k = await tailnet.mintKey({ tags });
        tailnetKeys.push(k.key);
        return k.key;
      },
      operators,
      kubectl,
      async getJson(kind, name) {
        return JSON.parse(await kubectl(['get', kind, name, '-o', 'json'])) as Record<string, unknown>;
      },
      async startOperator(extraArgs = [], env = {}) {
        const metricsPort = await freePort();
        const probePort = await freePort();
        const logs: string[] = [];
        const proc = spawn(
          process.execPath,
          [
            opts.builtOperator
              ? join(REPO, 'dist', 'operator', 'main.js')
              : join(REPO, 'operator', 'main.ts'),
            'run',
            '--metrics-bind-address',
            `127.0.0.1:${metricsPort}`,
            '--health-probe-bind-address',
            `127.0.0.1:${probePort}`,
            '--provider-origin',
            `anthropic=${upstreams.anthropic.url}`,
            '--provider-origin',
            `openai=${upstreams.openai.url}/v1`,
            '--provider-origin',
            `google=${upstreams.gemini.url}/v1beta`,
            ...nodeMirror.operatorArgs,
            '--resync',
            '30',
            // Test files share the rig's API server: each operator minds its own namespace.
            '--watch-namespace',
            namespace,
            ...extraArgs,
          ],
          {
            cwd: REPO,
            stdio: ['ignore', 'pipe', 'pipe'],
            env: {
              PATH: process.env['PATH'] ?? '/usr/bin:/bin',
              KUBECONFIG: rig.kubeconfigPath,
              DATABASE_URL: db.url,
              CANNES_MASTER_KEYS_FILE: masterKeysFile,
              HCLOUD_ENDPOINT: sim.endpoint,
              CANNES_PROXY_BUNDLE: join(REPO, 'dist', 'proxy', 'cannes-proxy.mjs'),
              POD_NAMESPACE: namespace,
              // As the image runs it (its ENV): the benchmark measures the memory that ships.
              ...OPERATOR_RUNTIME_ENV,
              LD_PRELOAD: hostJemalloc(),
              // A person debugging a test can raise the operator's log level (never set by tests).
              ...(process.env['CANNES_OPERATOR_LOG_LEVEL']
                ? { LOG_LEVEL: process.env['CANNES_OPERATOR_LOG_LEVEL'] }
                : {}),
              ...env,
            },
          },
        );
        // Logs stay in memory (tests scan them for canaries) and in a file, for a person.
        const logFile = join(process.env['CANNES_KEEP_LOGS'] || dir, `operator-${operators.length + 1}.log`);
        const sink = (b: Buffer) => {
          logs.push(b.toString());
          appendFileSync(logFile, b);
        };
        proc.stdout?.on('data', sink);
        proc.stderr?.on('data', sink);
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        const op: OperatorProcess = {
          proc,
          metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
          probesUrl: `http://127.0.0.1:${probePort}`,
          logs,
          async stop(signal = 'SIGTERM') {
            if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
            await exited;
          },
        };
        operators.push(op);
        return op;
      },
      stop,
    };
    return system;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The examples' objects, in this system's namespace, with the canaries as secret values. */
export function exampleManifests(
  s: System,
  opts: {
    vps?: string;
    keys?: ('anthropic' | 'openai' | 'google')[];
    purgeSecrets?: boolean;
    /** The owner's SSH public keys (spec.access.sshAuthorizedKeys). */
    ownerKeys?: string[];
    /** spec.tailnet on the rig tailnet, with this auth key in a labelled Secret `tailnet-auth`. */
    tailnet?: { authKey: string; tags?: string[]; hostname?: string; owners?: string[] };
  } = {},
) {
  const vps = opts.vps ?? 'agent';
  const keys = opts.keys ?? ['anthropic', 'openai'];
  const docs: unknown[] = [
    cloudTokenSecret(s.namespace, 'hcloud-token', s.canaries.hcloudToken),
    llmKeySecret(s.namespace, 'llm-keys', s.canaries.modelKeys),
    ...(opts.tailnet
      ? [
          {
            apiVersion: 'v1',
            kind: 'Secret',
            metadata: { name: 'tailnet-auth', namespace: s.namespace, labels: TAILNET_AUTH_KEY_LABELS },
            stringData: { authkey: opts.tailnet.authKey },
          },
        ]
      : []),
    vpsManifest(s.namespace, vps, {
      cloudTokenSecretRef: { name: 'hcloud-token', key: 'token' },
      access: opts.ownerKeys ? { sshAuthorizedKeys: opts.ownerKeys } : undefined,
      tailnet: opts.tailnet
        ? {
            authKeySecretRef: { name: 'tailnet-auth', key: 'authkey' },
            loginServer: s.tailnet?.url,
            tags: opts.tailnet.tags ?? [],
            ...(opts.tailnet.hostname ? { hostname: opts.tailnet.hostname } : {}),
            ...(opts.tailnet.owners ? { owners: opts.tailnet.owners } : {}),
          }
        : undefined,
    }),
    ...keys.map((p, i) =>
      modelKeyManifest(s.namespace, `${vps}-${p}`, {
        vpsRef: { name: vps },
        provider: p,
        secretRef: { name: 'llm-keys', key: p },
        purgeSecretAfterDelivery: opts.purgeSecrets ?? false,
        // The agent's default model is explicit: the first key's.
        default: i === 0,
      }),
    ),
  ];
  return docs.map((d) => stringify(d)).join('---\n');
}

/**
 * The host's jemalloc (Debian's libjemalloc2, installed by `make apt`): the rig's operator
 * allocates with it, as the image's does with its own copy (IMAGE_JEMALLOC).
 */
export function hostJemalloc(): string {
  const triplet = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : process.arch;
  const path = `/usr/lib/${triplet}-linux-gnu/libjemalloc.so.2`;
  if (!existsSync(path))
    throw new Error(`${path} is missing: run \`make apt\` (Debian package libjemalloc2)`);
  return path;
}

/**
 * The sum of a metric's series on the operator's /metrics whose labels contain `labels`
 * (e.g. `controller="vps"`); `whenAbsent` when there is no such series, else it fails.
 */
export async function metricSum(
  op: OperatorProcess,
  name: string,
  labels = '',
  whenAbsent?: number,
): Promise<number> {
  const text = await (await fetch(op.metricsUrl)).text();
  let sum = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name || !(m[2] ?? '').includes(labels)) continue;
    sum += Number(m[3]);
    seen = true;
  }
  if (seen) return sum;
  if (whenAbsent !== undefined) return whenAbsent;
  throw new Error(`the operator exports no ${name}{${labels}}`);
}

/** The shared polling helper (test/lib/wait.ts), re-exported for the rig's callers. */
export { waitFor, waitUntil } from './wait.ts';
