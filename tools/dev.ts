// `make dev`: the whole system on this machine (rig, Postgres, Hetzner simulator with real
// simulated servers, fake LLM upstreams), the operator running, examples/ applied as they are
// (only the FAKE secret values replaced by random canaries) in their own namespace, and the Vps
// followed step by step to Ready. Then it prints commands that work when pasted, and waits.
// Ctrl-C tears it all down. `make dev V=1` also shows the operator's logs.
//
// test/e2e/dev.test.ts runs this very file, to Ready, pastes the printed chat command, then
// sends Ctrl-C and checks nothing is left behind: if the main job breaks, a test fails.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ANNOTATION_GATEWAY_URL } from '../operator/api/schema.ts';
import { OWNER_USER } from '../operator/host/owner-access.ts';
import { REPO, type System, startSystem, TAILNET_AUTH_KEY_LABELS } from '../test/lib/system.ts';
import { freePort } from '../test/rig/controlplane.ts';
import { type Laptop, startLaptop } from '../test/tailnet/node.ts';

const verbose = process.env['V'] === '1';
/** Seconds without a new Event or condition change before dev says the Vps is stuck. */
const STALL_S = positiveInt('CANNES_DEV_STALL_S', 180);
/** Seconds before dev gives up on Ready and exits non-zero. */
const READY_TIMEOUT_S = positiveInt('CANNES_DEV_TIMEOUT_S', 30 * 60);
const t0 = Date.now();
const say = (line: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${line}`);

function positiveInt(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`${name} must be a positive whole number of seconds, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

if (process.getuid?.() !== 0) {
  console.error('make dev needs root: the simulated servers are network namespaces with their own sshd.');
  process.exit(2);
}
if (!existsSync(join(REPO, 'dist', 'proxy', 'cannes-proxy.mjs'))) {
  console.error('dist/ is missing: run `make build` (make dev does it for you).');
  process.exit(2);
}

type Doc = {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  spec?: Record<string, unknown>;
  stringData?: Record<string, string>;
};
type ExampleFile = { path: string; docs: Doc[] };

/** examples/*.yaml in apply order, parsed (the files themselves are applied unchanged). */
function readExamples(): ExampleFile[] {
  const dir = join(REPO, 'examples');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => {
      const path = join(dir, f);
      const docs = parseAllDocuments(readFileSync(path, 'utf8')).map((d) => d.toJS() as Doc);
      return { path, docs: docs.filter((d) => d !== null) };
    });
}

const ref = (v: unknown): { name: string; key: string } | undefined => {
  if (typeof v !== 'object' || v === null) return undefined;
  const name: unknown = Reflect.get(v, 'name');
  const key: unknown = Reflect.get(v, 'key');
  return typeof name === 'string' && typeof key === 'string' ? { name, key } : undefined;
};

/**
 * The examples' Secrets with every FAKE placeholder replaced: the Vps's cloud token by the
 * simulator's token, each ModelKey's key by the canary its provider's fake upstream accepts.
 * A placeholder nothing explains is an error: the examples changed and dev must learn them.
 */
function secretsWithCanaries(files: ExampleFile[], s: System): Doc[] {
  const docs = files.flatMap((f) => f.docs);
  const values = new Map<string, string>();
  const at = (r: { name: string; key: string }) => `${r.name}/${r.key}`;
  for (const d of docs) {
    if (d.kind === 'Vps') {
      const r = ref(d.spec?.['cloudTokenSecretRef']);
      if (r) values.set(at(r), s.canaries.hcloudToken);
    }
    if (d.kind === 'ModelKey') {
      const r = ref(d.spec?.['secretRef']);
      const provider = d.spec?.['provider'];
      const keys: Record<string, string> = s.canaries.modelKeys;
      if (r && typeof provider === 'string' && keys[provider] !== undefined)
        values.set(at(r), keys[provider]);
    }
  }
  return docs
    .filter((d) => d.kind === 'Secret')
    .map((d) => {
      const stringData: Record<string, string> = {};
      for (const key of Object.keys(d.stringData ?? {})) {
        const v = values.get(at({ name: d.metadata?.name ?? '', key }));
        if (v === undefined)
          throw new Error(
            `examples: Secret ${d.metadata?.name}/${key} is used by no Vps or ModelKey dev knows`,
          );
        stringData[key] = v;
      }
      return { ...d, stringData };
    });
}

let system: System | undefined;
let laptop: Laptop | undefined;
let stopping = false;
async function teardown(code: number): Promise<never> {
  if (stopping) process.exit(code);
  stopping = true;
  say('tearing down (operator, simulated servers, namespaces, database, control plane)...');
  await laptop?.stop().catch(() => {});
  await system?.stop();
  say('done');
  process.exit(code);
}
process.on('SIGINT', () => void teardown(0));
process.on('SIGTERM', () => void teardown(0));

type Cond = { type: string; status: string; reason: string; message: string };
type Ev = {
  metadata: { uid: string };
  reason?: string;
  note?: string;
  type?: string;
  regarding?: { kind?: string; name?: string };
  series?: { count?: number };
};
type VpsJson = {
  spec?: { gateway?: { port?: number } };
  metadata: { annotations?: Record<string, string> };
  status?: { conditions?: Cond[]; ready?: boolean };
};

try {
  const files = readExamples();
  const all = files.flatMap((f) => f.docs);
  const NS = all.find((d) => d.kind === 'Namespace')?.metadata?.name;
  const vpsName = all.find((d) => d.kind === 'Vps')?.metadata?.name;
  if (!NS || !vpsName) throw new Error('examples/ must hold a Namespace and a Vps');

  say('starting the rig: kube-apiserver + etcd, Postgres database, Hetzner simulator, fake LLM upstreams');
  // The rig's own tailnet too (Tailscale's test control server, DERP, real tailscaled):
  // the owner's way in, as Cannes' users reach their VPS.
  system = await startSystem({ namespace: NS, tailnet: true });
  const s = system;
  say(`API server ${s.rig.server} (kubeconfig ${s.rig.kubeconfigPath})`);
  say(`Hetzner simulator ${s.sim.endpoint}`);
  const k = (args: string[], stdin?: string) => s.rig.kubectl(args, stdin === undefined ? {} : { stdin });

  // examples/ as a user applies them: every file unchanged, except that the Secrets' FAKE
  // placeholders become canaries (server-side apply: no last-applied copy of a value).
  const secretFiles = files.filter((f) => f.docs.some((d) => d.kind === 'Secret'));
  const secrets = secretsWithCanaries(files, s);
  for (const f of files) {
    if (secretFiles.includes(f)) {
      await k(
        ['apply', '--server-side', '-f', '-'],
        JSON.stringify({ apiVersion: 'v1', kind: 'List', items: secrets }),
      );
    } else {
      await k(['apply', '--server-side', '-f', f.path]);
    }
  }
  say(`applied examples/ in namespace ${NS}: ${all.map((d) => `${d.kind}/${d.metadata?.name}`).join(', ')}`);

  // The owner's own SSH key, made here as an owner makes one on their laptop, added to the Vps
  // as they would add it (kubectl patch): the way in the printed tunnel command uses.
  const ownerKey = join(s.dir, 'owner_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'owner@make-dev', '-f', ownerKey]);
  const ownerPub = readFileSync(`${ownerKey}.pub`, 'utf8').trim();
  // And a tailnet auth key (minted by the rig's control server, as an owner makes one in the
  // Tailscale admin console), in a Secret labelled for that use.
  const authKey = await s.mintTailnetKey(['tag:cannes-vps']);
  await k(
    ['apply', '--server-side', '-f', '-'],
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'tailnet-auth', namespace: NS, labels: TAILNET_AUTH_KEY_LABELS },
      stringData: { authkey: authKey },
    }),
  );
  await k([
    '-n',
    NS,
    'patch',
    'vps',
    vpsName,
    '--type=merge',
    '-p',
    JSON.stringify({
      spec: {
        access: { sshAuthorizedKeys: [ownerPub] },
        tailnet: {
          authKeySecretRef: { name: 'tailnet-auth', key: 'authkey' },
          loginServer: s.tailnet?.url,
          tags: ['tag:cannes-vps'],
        },
      },
    }),
  ]);
  say(
    `made an owner SSH key (${ownerKey}) and a tailnet auth key (Secret tailnet-auth), and added both to Vps ${vpsName} (spec.access, spec.tailnet), as an owner would with kubectl patch`,
  );

  const op = await s.startOperator();
  if (verbose) {
    op.proc.stdout?.on('data', (b: Buffer) => process.stdout.write(b));
    op.proc.stderr?.on('data', (b: Buffer) => process.stderr.write(b));
  }
  op.proc.once('exit', (code) => {
    if (!stopping) {
      say(
        `failed: the operator exited (${code}); its last lines:\n${op.logs.join('').split('\n').slice(-20).join('\n')}`,
      );
      void teardown(1);
    }
  });
  say(`operator running, watching namespace ${NS}; metrics at ${op.metricsUrl}`);

  const getVps = async () =>
    JSON.parse((await k(['-n', NS, 'get', 'vps', vpsName, '-o', 'json'])).stdout) as VpsJson;
  /**
   * The gateway's config on the server names its tailnet origin, and the deploy has not changed
   * for 3 s since (the simulated server's disk is on this machine: the rig can look).
   */
  const settled = async (v: VpsJson) => {
    const url = v.metadata.annotations?.[ANNOTATION_GATEWAY_URL] ?? '';
    const disk = s.hosts.info(Number(v.metadata.annotations?.['cannes.dev/server-id']))?.diskDir;
    let config = '';
    try {
      config = disk ? readFileSync(join(disk, 'opt/cannes/gateway/config/openclaw.json'), 'utf8') : '';
    } catch {}
    if (!config.includes(JSON.stringify(new URL(url).origin))) return false;
    const a = v.metadata.annotations?.['cannes.dev/deployed'];
    await new Promise((r) => setTimeout(r, 3000));
    const b = await getVps();
    return b.status?.ready === true && b.metadata.annotations?.['cannes.dev/deployed'] === a;
  };
  const conditionsText = (v: VpsJson) =>
    (v.status?.conditions ?? [])
      .map((c) => `    ${c.type}=${c.status} ${c.reason}: ${c.message}`)
      .join('\n') || '    (no conditions yet)';
  const lastLogLines = (n: number) =>
    op.logs
      .join('')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .slice(-n)
      .map((l) => `    ${l}`)
      .join('\n');

  // Follow the Vps: Events arrive as each step finishes; conditions say where it stands. Any
  // new Event or condition change counts as progress; a long silence is reported, not waited out.
  const seen = new Set<string>();
  let lastState = '';
  let lastProgress = Date.now();
  let lastStallReport = 0;
  const deadline = Date.now() + READY_TIMEOUT_S * 1000;
  let vps: VpsJson;
  for (;;) {
    const events = JSON.parse((await k(['-n', NS, 'get', 'events.events.k8s.io', '-o', 'json'])).stdout) as {
      items: Ev[];
    };
    // The first deploy, then the one after the tailnet join (the gateway gets its tailnet
    // origin and restarts): a repeated Event counts in its series.
    const deploys = events.items
      .filter((e) => e.reason === 'GatewayDeployed' && e.regarding?.name === vpsName)
      .reduce((n, e) => n + (e.series?.count ?? 1), 0);
    for (const e of events.items) {
      if (seen.has(e.metadata.uid)) continue;
      seen.add(e.metadata.uid);
      lastProgress = Date.now();
      const mark = e.type === 'Warning' ? '!' : '•';
      say(
        `  ${mark} ${e.regarding?.kind ?? ''}/${e.regarding?.name ?? ''} ${e.reason ?? ''}: ${e.note ?? ''}`,
      );
    }
    vps = await getVps();
    const state = conditionsText(vps);
    if (state !== lastState) {
      lastState = state;
      lastProgress = Date.now();
    }
    // Ready, on the tailnet, and the redeploy that gives the gateway its tailnet origin done
    // (the reconcile after the join redeploys once; the gateway restarts then).
    if (
      vps.status?.ready === true &&
      vps.metadata.annotations?.[ANNOTATION_GATEWAY_URL] &&
      deploys >= 2 &&
      (await settled(vps))
    )
      break;
    const now = Date.now();
    if (now > deadline) {
      throw new Error(
        `the Vps did not become Ready within ${READY_TIMEOUT_S} s. Its conditions:\n${state}\n  the operator's last log lines:\n${lastLogLines(20)}`,
      );
    }
    if (now - lastProgress > STALL_S * 1000 && now - lastStallReport > STALL_S * 1000) {
      lastStallReport = now;
      say(
        `no progress for ${Math.round((now - lastProgress) / 1000)} s (still waiting; Ctrl-C to stop). Vps conditions:\n${state}\n  the operator's last log lines:\n${lastLogLines(15)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  for (const c of vps.status?.conditions ?? [])
    say(`  ${c.status === 'True' ? '✓' : '…'} ${c.type}: ${c.message}`);
  const ann = vps.metadata.annotations ?? {};
  const serverId = Number(ann['cannes.dev/server-id']);
  const netns = s.hosts.info(serverId)?.netns;
  if (!netns) throw new Error(`no simulated server ${ann['cannes.dev/server-id']} for the Ready Vps`);
  say(`Vps ${vpsName} is Ready: server ${serverId} at ${ann['cannes.dev/ipv4']}`);

  // A laptop on the tailnet: a network namespace with its own tailscaled, joined with its own
  // key. The rig's tailnet has no resolver, so the laptop learns the server's tailnet name as
  // MagicDNS would tell it (its /etc/netns hosts file).
  const gatewayUrl = ann[ANNOTATION_GATEWAY_URL] ?? '';
  const tailnetHost = new URL(gatewayUrl).hostname;
  const node = (await s.tailnet?.nodes())?.find(
    (n) => `${n.name}`.replace(/\.$/, '') === tailnetHost || n.hostname === tailnetHost.split('.')[0],
  );
  const tailnetIp = node?.addresses
    .map((a) => a.replace(/\/\d+$/, ''))
    .find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a));
  if (!s.tailnet || !tailnetIp) throw new Error(`the server ${tailnetHost} is not on the rig's tailnet`);
  laptop = await startLaptop(s.tailnet, { prefix: 'dev-laptop' });
  await laptop.knowHost(tailnetHost, tailnetIp);
  say(`a laptop on the tailnet: network namespace ${laptop.ns.name}; the gateway is at ${gatewayUrl}`);

  const kubectl = `${s.rig.binaries.kubectl} --kubeconfig ${s.rig.kubeconfigPath}`;
  const ipv4 = ann['cannes.dev/ipv4'] ?? '';
  const knownHosts = join(s.dir, 'known_hosts');
  const tunnelPort = await freePort();
  const gatewayPort = vps.spec?.gateway?.port ?? 18789;
  const mk = all.find((d) => d.kind === 'ModelKey' && Array.isArray(d.spec?.['models']));
  const firstModel = (mk?.spec?.['models'] as { id?: string }[] | undefined)?.[0]?.id;
  const model = mk && firstModel ? `cannes-${mk.metadata?.name}/${firstModel}` : undefined;
  console.log(`
  What is running now:
    ${kubectl} -n ${NS} get vps,modelkeys
    operator metrics: curl ${op.metricsUrl}
    operator log:     ${join(s.dir, 'operator-1.log')}

  Chat with the agent over your tailnet, as Cannes' owners reach their VPS (paste into a root
  shell on this machine: the laptop is a network namespace with its own tailscaled; the URL is
  the Vps's ${ANNOTATION_GATEWAY_URL} annotation; the rig's tailnet has no certificates, so Serve
  speaks HTTP inside WireGuard; the proxy on the server injects the real key):
    TOKEN=$(${kubectl} -n ${NS} get secret ${vpsName}-gateway -o jsonpath='{.data.token}' | base64 -d)
    ip netns exec ${laptop.ns.name} curl -sS --fail-with-body ${gatewayUrl}v1/chat/completions \\
      -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\${model ? `\n      -H 'x-openclaw-model: ${model}' \\` : ''}
      -d '{"model":"openclaw","messages":[{"role":"user","content":"Say hello."}]}'
    # the Control UI: ip netns exec ${laptop.ns.name} curl -sS ${gatewayUrl}

  Or with your own SSH key, as an owner without a tailnet does: write the published host key
  to known_hosts (no trust on first use), open a tunnel to the gateway, ask it through the
  tunnel with $TOKEN from above. The key gets this one forward and nothing else: no shell, no
  other port. Both ways work at once: Serve reaches the gateway over a Docker network of its
  own (docs/gateway.md, "Two ways in").
    ${kubectl} -n ${NS} get vps ${vpsName} -o jsonpath='{.metadata.annotations.cannes\\.dev/ssh-host-key}' | awk '{print "${ipv4} " $1 " " $2}' > ${knownHosts}
    ssh -N -o StrictHostKeyChecking=yes -o UserKnownHostsFile=${knownHosts} -o ExitOnForwardFailure=yes -i ${ownerKey} -L 127.0.0.1:${tunnelPort}:127.0.0.1:${gatewayPort} ${OWNER_USER}@${ipv4} & sleep 3
    curl -sS --fail-with-body http://127.0.0.1:${tunnelPort}/v1/chat/completions \\
      -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\${model ? `\n      -H 'x-openclaw-model: ${model}' \\` : ''}
      -d '{"model":"openclaw","messages":[{"role":"user","content":"Say hello."}]}'; echo; kill $!

  The operator's own SSH key is only in Postgres, encrypted: no person holds it.
  Ctrl-C tears everything down.
`);
  await new Promise(() => {});
} catch (err) {
  say(`failed: ${err instanceof Error ? err.message : String(err)}`);
  await teardown(1);
}
