// `make dev`: the whole system on this machine (rig, Postgres, Hetzner simulator with real
// simulated servers, fake LLM upstreams), the operator running, examples/ applied with random
// canary secrets, and the Vps followed step by step to Ready. Ctrl-C tears it all down.
// `make dev V=1` also shows the operator's logs.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, type System, startSystem, waitFor } from '../test/lib/system.ts';

const verbose = process.env['V'] === '1';
const t0 = Date.now();
const say = (line: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${line}`);

if (process.getuid?.() !== 0) {
  console.error('make dev needs root: the simulated servers are network namespaces with their own sshd.');
  process.exit(2);
}
if (!existsSync(join(REPO, 'dist', 'proxy', 'cannes-proxy.mjs'))) {
  console.error('dist/ is missing: run `make build` (make dev does it for you).');
  process.exit(2);
}

let system: System | undefined;
let stopping = false;
async function teardown(code: number): Promise<never> {
  if (stopping) process.exit(code);
  stopping = true;
  say('tearing down (operator, simulated servers, namespaces, database)...');
  await system?.stop();
  say('done');
  process.exit(code);
}
process.on('SIGINT', () => void teardown(0));
process.on('SIGTERM', () => void teardown(0));

try {
  say('starting the rig: kube-apiserver + etcd, Postgres database, Hetzner simulator, fake LLM upstreams');
  system = await startSystem();
  const s = system;
  say(`API server ${s.rig.server} (kubeconfig ${s.rig.kubeconfigPath}), namespace ${s.namespace}`);
  say(`Hetzner simulator ${s.sim.endpoint}`);
  const op = await s.startOperator();
  if (verbose) {
    op.proc.stdout?.on('data', (b: Buffer) => process.stdout.write(b));
    op.proc.stderr?.on('data', (b: Buffer) => process.stderr.write(b));
  }
  op.proc.once('exit', (code) => {
    if (!stopping) {
      say(`the operator exited (${code}); last lines:\n${op.logs.slice(-10).join('')}`);
      void teardown(1);
    }
  });
  say(`operator running; metrics at ${op.metricsUrl}`);
  // examples/ as a user would apply them, with the FAKE placeholders of the Secrets replaced
  // by random canaries (the simulator's token, keys the fake upstreams accept).
  const NS = 'cannes-demo';
  const k = (args: string[], stdin?: string) => s.rig.kubectl(args, stdin === undefined ? {} : { stdin });
  await k(['apply', '-f', join(REPO, 'examples', '00-namespace.yaml')]);
  const secrets = [
    { name: 'hcloud-token', data: { token: s.canaries.hcloudToken } },
    {
      name: 'llm-keys',
      data: { anthropic: s.canaries.modelKeys.anthropic, openai: s.canaries.modelKeys.openai },
    },
  ].map((x) => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: x.name, namespace: NS },
    stringData: x.data,
  }));
  await k(
    ['apply', '--server-side', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: secrets }),
  );
  await k([
    'apply',
    '-f',
    join(REPO, 'examples', '20-vps.yaml'),
    '-f',
    join(REPO, 'examples', '30-modelkeys.yaml'),
  ]);
  say(
    `applied examples/ in namespace ${NS}: Secrets (canary values), Vps "agent", ModelKeys "claude" and "gpt"`,
  );

  type Cond = { type: string; status: string; reason: string; message: string };
  type Ev = {
    metadata: { uid: string };
    reason?: string;
    note?: string;
    type?: string;
    regarding?: { kind?: string; name?: string };
  };
  const seen = new Set<string>();
  const getVps = async () =>
    JSON.parse((await k(['-n', NS, 'get', 'vps', 'agent', '-o', 'json'])).stdout) as {
      status?: { conditions?: Cond[]; ready?: boolean };
      metadata: { annotations?: Record<string, string> };
    };
  await waitFor(
    'the Vps to become Ready',
    async () => {
      // Events arrive as each step finishes; conditions summarise where the Vps stands.
      const events = JSON.parse(
        (await k(['-n', NS, 'get', 'events.events.k8s.io', '-o', 'json'])).stdout,
      ) as { items: Ev[] };
      for (const e of events.items) {
        if (seen.has(e.metadata.uid)) continue;
        seen.add(e.metadata.uid);
        const mark = e.type === 'Warning' ? '!' : '•';
        say(
          `  ${mark} ${e.regarding?.kind ?? ''}/${e.regarding?.name ?? ''} ${e.reason ?? ''}: ${e.note ?? ''}`,
        );
      }
      const vps = await getVps();
      return vps.status?.ready === true ? true : undefined;
    },
    30 * 60_000,
  );
  for (const c of (await getVps()).status?.conditions ?? [])
    say(`  ${c.status === 'True' ? '✓' : '…'} ${c.type}: ${c.message}`);
  const ann = (await getVps()).metadata.annotations ?? {};
  const netns = s.hosts.info(Number(ann['cannes.dev/server-id']))?.netns ?? '<server netns>';
  say(`Vps agent is Ready: server ${ann['cannes.dev/server-id']} at ${ann['cannes.dev/ipv4']}`);
  console.log(`
  What is running now:
    kubectl --kubeconfig ${s.rig.kubeconfigPath} -n cannes-demo get vps,modelkeys
    operator metrics:   curl ${op.metricsUrl}
    the gateway token:  kubectl --kubeconfig ${s.rig.kubeconfigPath} -n cannes-demo get secret agent-gateway -o jsonpath='{.data.token}' | base64 -d
    a chat through the gateway (it listens on the server's loopback; the proxy injects the key):
      TOKEN=$(kubectl --kubeconfig ${s.rig.kubeconfigPath} -n cannes-demo get secret agent-gateway -o jsonpath='{.data.token}' | base64 -d)
      ip netns exec ${netns} curl -sS http://127.0.0.1:18789/v1/chat/completions -H "authorization: Bearer $TOKEN" \\
        -H 'content-type: application/json' -H 'x-openclaw-model: cannes-claude/claude-sonnet-4-5' \\
        -d '{"model":"openclaw","messages":[{"role":"user","content":"Say hello."}]}'
    ssh to the server: not possible by design (its key is only in Postgres, encrypted)
  Ctrl-C tears everything down.
`);
  await new Promise(() => {});
} catch (err) {
  say(`failed: ${err instanceof Error ? err.message : String(err)}`);
  await teardown(1);
}
