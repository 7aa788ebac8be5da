// `make dev`: the whole system on this machine (rig, Postgres, Hetzner simulator with real
// simulated servers, fake LLM upstreams), the operator running, examples/ applied with random
// canary secrets, and the Vps followed step by step to Ready. Ctrl-C tears it all down.
// `make dev V=1` also shows the operator's logs.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { exampleManifests, REPO, type System, startSystem, waitFor } from '../test/lib/system.ts';

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
  await s.kubectl(['apply', '-f', '-'], exampleManifests(s));
  say('applied: Secrets (random canary values), Vps "agent", ModelKeys "agent-anthropic" and "agent-openai"');

  const seen = new Set<string>();
  await waitFor(
    'the Vps to become Ready',
    async () => {
      const vps = await s.getJson('vps', 'agent');
      const status = (vps['status'] ?? {}) as {
        conditions?: { type: string; status: string; reason: string; message: string }[];
        ready?: boolean;
      };
      for (const c of status.conditions ?? []) {
        const line = `${c.type}=${c.status} (${c.reason}) ${c.message}`;
        if (!seen.has(line)) {
          seen.add(line);
          say(`  ${c.status === 'True' ? '✓' : c.status === 'False' ? '…' : '?'} ${line}`);
        }
      }
      return status.ready === true ? true : undefined;
    },
    30 * 60_000,
  );
  const vps = await s.getJson('vps', 'agent');
  const ann = (vps['metadata'] as { annotations?: Record<string, string> }).annotations ?? {};
  say(`Vps agent is Ready: server ${ann['cannes.dev/server-id']} at ${ann['cannes.dev/ipv4']}`);
  console.log(`
  What is running now:
    kubectl --kubeconfig ${s.rig.kubeconfigPath} -n ${s.namespace} get vps,modelkeys
    operator metrics:   curl ${op.metricsUrl}
    the gateway token:  kubectl --kubeconfig ${s.rig.kubeconfigPath} -n ${s.namespace} get secret agent-gateway -o jsonpath='{.data.token}' | base64 -d
    the gateway listens on 127.0.0.1:18789 inside the server (reach it with: ip netns exec <server netns> curl ...)
  Ctrl-C tears everything down.
`);
  await new Promise(() => {});
} catch (err) {
  say(`failed: ${err instanceof Error ? err.message : String(err)}`);
  await teardown(1);
}
