/**
 * `cannes-operator recover <namespace>/<vps>`: the break-glass path when the store lost a Vps's
 * SSH key (the database, or its row, is gone). The command checks every precondition and then
 * records a recovery intent on the Vps (annotation `cannes.dev/recover` = the id of the one
 * Hetzner server carrying the Vps's uid label); the running operator's reconcile acts on it with
 * its usual steps: find the server by label, reset it into rescue, make a new key there (born on
 * the server, stored encrypted), redeploy, rotate, purge the token again (docs/operations.md).
 *
 * It never resets a server itself: one reconcile per Vps (the leader's) does, so the command
 * cannot race the operator into two rescue sessions.
 */
import { parseArgs } from 'node:util';
import { CannesError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import { KubePort, MODELKEY_RESOURCE, VPS_RESOURCE } from '../adapters/kube.ts';
import { controllerStore } from '../adapters/store.ts';
import { parseModelKey, parseVps } from '../api/parse.ts';
import { ANNOTATION_RECOVER, LABEL_SECRET_USAGE, LABEL_VPS_UID } from '../api/schema.ts';
import type { ModelKeyObject, VpsObject } from '../controllers/ports.ts';
import { cloudToken } from '../controllers/vps-steps.ts';
import { HcloudClient } from '../hcloud/client.ts';
import { KubeClient } from '../kube/client.ts';
import { loadConnection } from '../kube/connection.ts';
import { EventRecorder } from '../kube/events.ts';
import { Informer } from '../kube/informer.ts';
import { openStoreFromEnv } from '../store/index.ts';

export const RECOVER_HELP = `Usage: cannes-operator recover <namespace>/<vps>

Break-glass for a Vps whose SSH key the store lost (database or its row gone, no backup):
regains the server through Hetzner's rescue system with a FRESH Hetzner token.

Before running it:
  1. The operator runs (it does the recovery: one reconcile, on the leader).
  2. Put a new Hetzner Cloud token (read+write, same project) into the Vps's
     spec.cloudTokenSecretRef Secret, labelled ${LABEL_SECRET_USAGE}=cloud-token.

It checks, and refuses with one line (exit 2) when one fails:
  - the master key file loads (CANNES_MASTER_KEYS_FILE): the new key is stored encrypted;
  - the store has no usable key for the Vps (else there is nothing to recover);
  - the token Secret exists, is labelled, and holds a token;
  - exactly one Hetzner server carries the label ${LABEL_VPS_UID}=<the Vps's uid>.
Then it records the intent (annotation ${ANNOTATION_RECOVER}=<server id>) and exits 0. The operator
resets that server into rescue, makes a new SSH key there (the old one stops working),
stores it, reboots, redeploys, rotates the key, purges the token again and removes the
annotation. Watch: kubectl -n <namespace> get vps <vps> (HasSshKey, then Ready).
The server reboots twice: its agent is down for a few minutes.

Environment: DATABASE_URL, CANNES_MASTER_KEYS_FILE, KUBECONFIG (or in-cluster), HCLOUD_ENDPOINT.

Exit status: 0 recovery requested; 1 an API failed (run it again); 2 usage error or refusal.
`;

/** A refusal: one line on stderr, exit 2. */
class Refusal extends Error {}

const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function parseTarget(argv: string[]): { help: true } | { namespace: string; name: string } {
  let parsed: { values: { help?: boolean | undefined }; positionals: string[] };
  try {
    parsed = parseArgs({
      args: argv,
      options: { help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    const first = err instanceof Error ? (err.message.split('. ')[0] ?? 'invalid') : 'invalid';
    throw new Refusal(`${first} (see cannes-operator recover --help)`);
  }
  if (parsed.values.help === true) return { help: true };
  const [target, ...more] = parsed.positionals;
  const m = target === undefined || more.length > 0 ? null : /^([^/]+)\/([^/]+)$/.exec(target);
  if (!m || !NAME.test(m[1] ?? '') || !NAME.test(m[2] ?? ''))
    throw new Refusal('expected one argument <namespace>/<vps> (see cannes-operator recover --help)');
  return { namespace: m[1] as string, name: m[2] as string };
}

/** The Kube port for one command: reads and one annotation write, no informer started. */
async function kubeFor(): Promise<{ kube: KubePort; events: EventRecorder }> {
  const api = new KubeClient(await loadConnection());
  const events = new EventRecorder({ api, reportingInstance: `recover-${process.pid}` });
  const vpses = new Informer<VpsObject>({ api, resource: VPS_RESOURCE, parse: parseVps });
  const modelKeys = new Informer<ModelKeyObject>({ api, resource: MODELKEY_RESOURCE, parse: parseModelKey });
  return { kube: new KubePort({ api, events, vpses, modelKeys }), events };
}

/** The token from the Vps's Secret, or a refusal naming what is missing (never the value). */
async function tokenOf(vps: VpsObject, kube: KubePort): Promise<Secret> {
  const ref = vps.spec.cloudTokenSecretRef;
  const ns = vps.metadata.namespace ?? 'default';
  const read = await kube.readSecretKey(ns, ref.name, ref.key, 'cloud-token');
  if (read.resourceVersion === undefined && !read.notLabelled)
    throw new Refusal(
      `Secret ${ns}/${ref.name} does not exist: create it, labelled ${LABEL_SECRET_USAGE}=cloud-token, with a fresh Hetzner token in key "${ref.key}"`,
    );
  try {
    return await cloudToken(vps, { kube }, 'recover the server');
  } catch (err) {
    if (err instanceof CannesError) throw new Refusal(err.message);
    throw err;
  }
}

/** The one server carrying the Vps's uid label, or a refusal (none, or more than one). */
async function serverOf(vps: VpsObject, token: Secret, env: NodeJS.ProcessEnv): Promise<number> {
  const client = new HcloudClient({ endpoint: env['HCLOUD_ENDPOINT'] || 'https://api.hetzner.cloud/v1' });
  const uid = vps.metadata.uid;
  const found = await client.listAllServers(token, { labelSelector: `${LABEL_VPS_UID}==${uid}` });
  const ids = found.map((s) => s.id).sort((a, b) => a - b);
  if (ids.length === 0)
    throw new Refusal(
      `no Hetzner server carries the label ${LABEL_VPS_UID}=${uid}: nothing to recover (is the token for the project the server is in?)`,
    );
  if (ids.length > 1)
    throw new Refusal(
      `${ids.length} Hetzner servers carry the label ${LABEL_VPS_UID}=${uid} (ids ${ids.join(', ')}): recover picks none; delete or relabel the ones that are not this Vps's, then run it again`,
    );
  return ids[0] as number;
}

async function requestRecovery(
  target: { namespace: string; name: string },
  env: NodeJS.ProcessEnv,
): Promise<string> {
  // The master keys first: without them a new key could not be stored, and nothing is touched.
  const { store } = await openStoreFromEnv(env).catch((err: unknown) => {
    throw new Refusal(err instanceof CannesError ? `${err.reason}: ${err.message}` : 'cannot open the store');
  });
  try {
    const { kube, events } = await kubeFor();
    const where = `${target.namespace}/${target.name}`;
    const vps = await kube.readVps(target.namespace, target.name);
    if (!vps) throw new Refusal(`Vps ${where} not found`);
    if (vps.metadata.deletionTimestamp) throw new Refusal(`Vps ${where} is being deleted`);
    const state = await controllerStore(store).getVps(vps.metadata.uid);
    if (state?.activeKey && state.record.hostKey && state.record.serverId !== null)
      throw new Refusal(
        `Vps ${where} has a healthy store row (server ${state.record.serverId}, an active SSH key): nothing to recover`,
      );
    const token = await tokenOf(vps, kube);
    const serverId = await serverOf(vps, token, env);
    await kube.setAnnotations('Vps', vps.metadata, { [ANNOTATION_RECOVER]: String(serverId) });
    await kube.event(
      'Vps',
      vps.metadata,
      'Normal',
      'RecoveryRequested',
      `cannes-operator recover: Hetzner server ${serverId} will be reset into rescue for a new SSH key`,
    );
    await events.flush();
    return `recovery of Vps ${where} requested: the operator resets Hetzner server ${serverId} into rescue, makes a new SSH key there and redeploys; watch "kubectl -n ${target.namespace} get vps ${target.name}"\n`;
  } finally {
    await store.close();
  }
}

/** `cannes-operator recover`: returns the exit status; one line on stderr when it refuses. */
export async function recoverCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  try {
    const target = parseTarget(argv);
    if ('help' in target) {
      process.stdout.write(RECOVER_HELP);
      return 0;
    }
    process.stdout.write(await requestRecovery(target, env));
    return 0;
  } catch (err) {
    if (err instanceof Refusal) {
      process.stderr.write(`cannes-operator recover: ${err.message}\n`);
      return 2;
    }
    // An API failure: named by our reason, never by a message that could echo an input.
    const why =
      err instanceof CannesError
        ? `${err.reason}: ${err.message}`
        : `unexpected error (${err instanceof Error ? err.name : typeof err})`;
    process.stderr.write(`cannes-operator recover: ${why}\n`);
    return 1;
  }
}
