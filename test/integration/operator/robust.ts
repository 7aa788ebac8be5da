/**
 * Shared checks of the robustness tests (crash at every step, faults, two replicas) and of
 * bench/operator.bench.ts: what "converged without duplicates" means, read from the real
 * parts (the simulator's API, Postgres, the gateway inside the simulated server).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { stringify } from 'yaml';
import type { RecordedRequest } from '../../hcloud-sim/simulator.ts';
import {
  cloudTokenSecret,
  llmKeySecret,
  type Manifest,
  modelKeyManifest,
  TAILNET_AUTH_KEY_LABELS,
  vpsManifest,
} from '../../lib/manifests.ts';
import { endStdin } from '../../lib/stdin.ts';
import { type OperatorProcess, type System, waitFor } from '../../lib/system.ts';

const run = promisify(execFile);

/** Our own look-ups carry this header so they are never counted as operator calls. */
export const TEST_HEADER = 'x-cannes-test';

export type VpsJson = {
  metadata: { uid: string; annotations?: Record<string, string> };
  status?: { ready?: boolean; conditions?: { type: string; status: string; reason: string }[] };
};

/** Requests the operator (not this test) sent to the simulator. */
export function operatorRequests(s: System): RecordedRequest[] {
  return s.sim.requests.filter((r) => r.headers[TEST_HEADER] === undefined);
}

/**
 * POST /servers of the operator that created a server for the Vps with this uid (its label is
 * in the body). Refused ones (injected 5xx/429) created nothing and are not counted.
 */
export function serverCreates(s: System, uid: string): RecordedRequest[] {
  return operatorRequests(s).filter(
    (r) => r.method === 'POST' && r.route === '/servers' && r.status < 300 && r.body.includes(uid),
  );
}

/** Servers that exist in the simulator with this Vps's label. */
export async function serversLabelled(s: System, uid: string): Promise<number[]> {
  const url = `${s.sim.endpoint}/servers?label_selector=${encodeURIComponent(`cannes.dev/vps-uid==${uid}`)}`;
  const res = await fetch(url, {
    headers: { authorization: `Bearer ${s.sim.token.reveal()}`, [TEST_HEADER]: '1' },
  });
  if (!res.ok) throw new Error(`simulator list servers: HTTP ${res.status}`);
  const body = (await res.json()) as { servers: { id: number }[] };
  return body.servers.map((x) => x.id);
}

/** SSH key rows of one Vps by state. */
export async function keyStates(s: System, uid: string, url = s.db.url): Promise<Record<string, number>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const rows = await client.query<{ state: string; n: number }>(
      'SELECT state, count(*)::int AS n FROM cannes_ssh_key WHERE vps_uid = $1 GROUP BY state',
      [uid],
    );
    return Object.fromEntries(rows.rows.map((r) => [r.state, r.n]));
  } finally {
    await client.end();
  }
}

export async function getVps(s: System, name: string): Promise<VpsJson> {
  return (await s.getJson('vps', name)) as VpsJson;
}

export const logTail =
  (ops: readonly OperatorProcess[], lines = 40) =>
  () =>
    ops
      .map(
        (o, i) => `--- operator ${i + 1} log tail:\n${o.logs.join('').split('\n').slice(-lines).join('\n')}`,
      )
      .join('\n');

export async function waitReady(
  s: System,
  name: string,
  timeoutMs: number,
  diag: () => string,
): Promise<VpsJson> {
  return waitFor(
    `Vps ${name} Ready`,
    async () => {
      const v = await getVps(s, name);
      return v.status?.ready === true ? v : undefined;
    },
    timeoutMs,
    diag,
  );
}

/**
 * One Vps with one ModelKey (openai), in the system's namespace, with a cloud-token Secret of
 * its own (`<name>-hcloud`): each Vps purges its token after setup, and a shared Secret put
 * back by `kubectl apply` can be purged again by a Vps that finished earlier (see
 * docs/robustness.md).
 */
export function vpsManifests(s: System, name: string, opts: { tailnetKey?: string } = {}): string {
  const docs: Manifest[] = [
    ...(opts.tailnetKey
      ? [
          {
            apiVersion: 'v1',
            kind: 'Secret',
            metadata: { name: `${name}-tailnet`, namespace: s.namespace, labels: TAILNET_AUTH_KEY_LABELS },
            stringData: { authkey: opts.tailnetKey },
          },
        ]
      : []),
    cloudTokenSecret(s.namespace, `${name}-hcloud`, s.canaries.hcloudToken),
    llmKeySecret(s.namespace, 'llm-keys', s.canaries.modelKeys),
    ...openaiVps(s, name, `${name}-hcloud`, opts.tailnetKey ? s.tailnet?.url : undefined),
  ];
  return docs.map((d) => stringify(d)).join('---\n');
}

/**
 * A Vps whose token is in Secret `tokenSecret` and its one ModelKey (openai, from the
 * `llm-keys` Secret, kept after delivery): the unit of the robustness tests and the benchmark.
 */
export function openaiVps(
  s: System,
  name: string,
  tokenSecret: string,
  tailnetLoginServer?: string,
): Manifest[] {
  return [
    vpsManifest(s.namespace, name, {
      cloudTokenSecretRef: { name: tokenSecret, key: 'token' },
      // With a login server: on the rig's tailnet, the auth key in Secret `<name>-tailnet`.
      tailnet: tailnetLoginServer
        ? { authKeySecretRef: { name: `${name}-tailnet`, key: 'authkey' }, loginServer: tailnetLoginServer }
        : undefined,
    }),
    modelKeyManifest(s.namespace, `${name}-openai`, {
      vpsRef: { name },
      provider: 'openai',
      secretRef: { name: 'llm-keys', key: 'openai' },
      purgeSecretAfterDelivery: false,
    }),
  ];
}

/**
 * The gateway on the Vps's server answers an authenticated HTTP request on its loopback
 * (sent from inside the server's network namespace). Returns the HTTP status.
 */
export async function gatewayStatus(s: System, vpsName: string, serverId: number): Promise<number> {
  const info = s.hosts.info(serverId);
  if (!info) throw new Error(`no simulated host for server ${serverId}`);
  const secret = JSON.parse(await s.kubectl(['get', 'secret', `${vpsName}-gateway`, '-o', 'json'])) as {
    data: { token: string };
  };
  const token = Buffer.from(secret.data.token, 'base64').toString('utf8');
  const script = `
const token = require('fs').readFileSync(0, 'utf8');
fetch('http://127.0.0.1:18789/v1/models', { headers: { authorization: 'Bearer ' + token }, signal: AbortSignal.timeout(20000) })
  .then((r) => process.stdout.write(String(r.status)), () => process.stdout.write('0'));
`;
  const child = execFile('ip', ['netns', 'exec', info.netns, process.execPath, '-e', script], {
    timeout: 30_000,
  });
  endStdin(child.stdin, token);
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString();
  });
  await new Promise((r) => child.once('exit', r));
  return Number(out || '0');
}

/** Polls until the gateway answers with a non-5xx status (its first start takes 30-50 s). */
export async function waitGateway(s: System, vpsName: string, serverId: number): Promise<number> {
  return waitFor(
    `gateway of ${vpsName} answering`,
    async () => {
      const st = await gatewayStatus(s, vpsName, serverId);
      return st > 0 && st < 500 ? st : undefined;
    },
    180_000,
  );
}

/** Network namespaces of simulated servers (cs-<id>-<hex>) that exist right now. */
export async function serverNamespaces(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => /^cs-\d+-[0-9a-f]+$/.test(n));
}

/** Waits for an operator process to exit; returns its exit code (null if killed by a signal). */
export async function exited(op: OperatorProcess, timeoutMs: number): Promise<number | null> {
  const p = op.proc;
  if (p.exitCode !== null || p.signalCode !== null) return p.exitCode;
  return await new Promise<number | null>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('operator did not exit in time')), timeoutMs);
    // 'close', not 'exit': by then every byte it wrote to stdout/stderr has been read.
    p.once('close', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}
