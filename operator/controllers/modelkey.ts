/**
 * The ModelKey controller. The Vps controller is the only writer to a server (one SSH
 * writer per host, no interleaved deploys); this controller checks the key's Secret,
 * reports `hasKey` / `delivered`, purges the Secret after delivery when asked, and holds a
 * finalizer until the Vps has redeployed without the key.
 *
 * A Direct ModelKey has no Secret: its key goes from the owner to the server over the
 * tailnet. `hasKey` is what the server last said (the Vps annotation cannes.dev/direct-keys,
 * booleans only), never anything read from the key itself.
 */
import type { ModelKeyStatus } from '../api/schema.ts';
import { FINALIZER } from '../api/schema.ts';
import { isValidApiKey } from '../host/key-file.ts';
import { type Condition, setCondition } from '../kube/conditions.ts';
import { done, type Result } from '../kube/controller.ts';
import { deliveredKeysOf, isDelivered, parseDirectKeys } from './keys.ts';
import type { Kube, ModelKeyObject, VpsObject } from './ports.ts';

export interface ModelKeyDeps {
  readonly kube: Kube;
  readonly now: () => Date;
}

type Reason = [reason: string, message: string];

/** What one reconcile found: the key's presence and the two conditions that explain it. */
interface KeyFacts {
  readonly hasKey: boolean;
  readonly hasKeyWhy: Reason;
  /** Only for Secret delivery: the Secret still holds a value (the purge has work to do). */
  readonly secretHolds: boolean;
}

export async function reconcileModelKey(mk: ModelKeyObject, d: ModelKeyDeps): Promise<Result> {
  const m = mk.metadata;
  const namespace = m.namespace ?? 'default';
  const vps = d.kube.getVps(namespace, mk.spec.vpsRef.name);
  if (m.deletionTimestamp) return finalize(mk, vps, d);
  if (!m.finalizers.includes(FINALIZER)) await d.kube.addFinalizer('ModelKey', m);

  const direct = mk.spec.delivery === 'Direct';
  const facts = direct ? directFacts(mk, vps) : await secretFacts(mk, vps, d);
  // Direct: the route on the server is not enough, the owner's key must be there too.
  const delivered = isDelivered(mk, vps) && (!direct || facts.hasKey);
  const delivery = deliveryReason(mk, vps, delivered, facts.hasKey, direct);
  let conditions = [...((mk.status.conditions ?? []) as Condition[])];
  const gen = m.generation ?? 0;
  const set = (type: string, ok: boolean, [reason, message]: Reason) => {
    conditions = setCondition(
      conditions,
      { type, status: ok ? 'True' : 'False', reason, message, observedGeneration: gen },
      d.now(),
    );
  };
  set('HasKey', facts.hasKey, facts.hasKeyWhy);
  set('Delivered', delivered, delivery);
  // Ready (for `kubectl wait --for=condition=Ready mk/x`): the proxy on the server routes this
  // key; until then the reason says what it waits for.
  set('Ready', delivered, delivered ? ['Ready', 'the proxy on the server injects this key'] : delivery);

  const ref = mk.spec.secretRef;
  if (ref && !direct && mk.spec.purgeSecretAfterDelivery && delivered && facts.secretHolds) {
    await d.kube.removeSecretKey(namespace, ref.name, ref.key, 'llm-key');
    const msg = `removed key "${ref.key}" from Secret ${ref.name}`;
    await d.kube.event('ModelKey', m, 'Normal', 'SecretPurged', msg);
  }

  const status: ModelKeyStatus = { observedGeneration: gen, hasKey: facts.hasKey, delivered, conditions };
  if (JSON.stringify(status) !== JSON.stringify(mk.status)) {
    if (delivered && !mk.status.delivered) {
      await d.kube.event('ModelKey', m, 'Normal', 'Delivered', `delivered to Vps ${mk.spec.vpsRef.name}`);
    }
    await d.kube.patchModelKeyStatus(m, status);
  }
  return done();
}

async function finalize(mk: ModelKeyObject, vps: VpsObject | undefined, d: ModelKeyDeps): Promise<Result> {
  const m = mk.metadata;
  if (!m.finalizers.includes(FINALIZER)) return done();
  // Wait until the Vps has redeployed without this key (its annotation change re-enqueues
  // us), or the Vps is gone / being deleted (the server and its key file go with it).
  const stillOnServer =
    vps && !vps.metadata.deletionTimestamp && m.name in deliveredKeysOf(vps.metadata.annotations);
  if (!stillOnServer) await d.kube.removeFinalizer('ModelKey', m);
  return done();
}

async function secretFacts(
  mk: ModelKeyObject,
  vps: VpsObject | undefined,
  d: ModelKeyDeps,
): Promise<KeyFacts> {
  const ref = mk.spec.secretRef ?? { name: '', key: '' };
  const namespace = mk.metadata.namespace ?? 'default';
  const secret = await d.kube.readSecretKey(namespace, ref.name, ref.key, 'llm-key');
  const hasKey = secret.value !== undefined && isValidApiKey(secret.value);
  const where = `Secret ${ref.name} key "${ref.key}"`;
  const hasKeyWhy: Reason = hasKey
    ? ['KeyPresent', `${where} holds a key`]
    : isDelivered(mk, vps)
      ? ['SecretPurged', 'the key was delivered and then removed from the Secret']
      : secret.notLabelled
        ? ['SecretNotLabelled', secret.notLabelled]
        : secret.value !== undefined
          ? ['KeyMalformed', `${where} is not a single-line printable key`]
          : ['SecretMissing', `put the API key into Secret ${ref.name}, key "${ref.key}"`];
  return { hasKey, hasKeyWhy, secretHolds: secret.value !== undefined };
}

/** What the server last reported for this Direct route (the Vps annotation; booleans only). */
export function directKeyReported(vps: VpsObject | undefined, name: string): boolean {
  return vps ? parseDirectKeys(vps.metadata.annotations).keys[name] === true : false;
}

function directFacts(mk: ModelKeyObject, vps: VpsObject | undefined): KeyFacts {
  const hasKey = directKeyReported(vps, mk.metadata.name);
  const hasKeyWhy: Reason = hasKey
    ? ['KeyOnServer', 'the server holds a key for this route, handed over directly by an owner']
    : ['AwaitingOwnerKey', awaitingOwner(mk)];
  return { hasKey, hasKeyWhy, secretHolds: false };
}

function awaitingOwner(mk: ModelKeyObject): string {
  const id = `${mk.metadata.namespace ?? 'default'}/${mk.metadata.name}`;
  return `hand the key to the server over the tailnet: node dist/operator/main.js key set ${id} --from-stdin`;
}

function deliveryReason(
  mk: ModelKeyObject,
  vps: VpsObject | undefined,
  delivered: boolean,
  hasKey: boolean,
  direct: boolean,
): Reason {
  const ref = mk.spec.secretRef;
  const name = mk.spec.vpsRef.name;
  if (delivered) return ['Delivered', `in the proxy key file of Vps ${name}`];
  if (!vps) return ['VpsNotFound', `Vps ${name} does not exist in this namespace`];
  if (direct && isDelivered(mk, vps)) return ['AwaitingOwnerKey', awaitingOwner(mk)];
  if (!direct && !hasKey && mk.status.delivered && ref)
    return [
      'SecretPurgedNeedsRedelivery',
      `the server needs the key again: put it into Secret ${ref.name}, key "${ref.key}"`,
    ];
  return ['WaitingForVps', `waiting for Vps ${name} to deploy the ${direct ? 'route' : 'key'}`];
}
