/**
 * The ModelKey controller. The Vps controller is the only writer to a server (one SSH
 * writer per host, no interleaved deploys); this controller checks the key's Secret,
 * reports `hasKey` / `delivered`, purges the Secret after delivery when asked, and holds a
 * finalizer until the Vps has redeployed without the key.
 */
import type { ModelKeyStatus } from '../api/schema.ts';
import { FINALIZER } from '../api/schema.ts';
import { isValidApiKey } from '../host/key-file.ts';
import { type Condition, setCondition } from '../kube/conditions.ts';
import { done, type Result } from '../kube/controller.ts';
import { deliveredKeysOf, isDelivered } from './keys.ts';
import type { Kube, ModelKeyObject } from './ports.ts';

export interface ModelKeyDeps {
  readonly kube: Kube;
  readonly now: () => Date;
}

export async function reconcileModelKey(mk: ModelKeyObject, d: ModelKeyDeps): Promise<Result> {
  const m = mk.metadata;
  const namespace = m.namespace ?? 'default';
  const vps = d.kube.getVps(namespace, mk.spec.vpsRef.name);

  if (m.deletionTimestamp) {
    if (!m.finalizers.includes(FINALIZER)) return done();
    // Wait until the Vps has redeployed without this key (its annotation change re-enqueues
    // us), or the Vps is gone / being deleted (the server and its key file go with it).
    const stillOnServer =
      vps && !vps.metadata.deletionTimestamp && m.name in deliveredKeysOf(vps.metadata.annotations);
    if (stillOnServer) return done();
    await d.kube.removeFinalizer('ModelKey', m);
    return done();
  }
  if (!m.finalizers.includes(FINALIZER)) await d.kube.addFinalizer('ModelKey', m);

  const ref = mk.spec.secretRef;
  const secret = await d.kube.readSecretKey(namespace, ref.name, ref.key, 'llm-key');
  const hasKey = secret.value !== undefined && isValidApiKey(secret.value);
  const delivered = isDelivered(mk, vps);
  let conditions = [...((mk.status.conditions ?? []) as Condition[])];
  const gen = m.generation ?? 0;
  const set = (type: string, ok: boolean, reason: string, message: string) => {
    conditions = setCondition(
      conditions,
      { type, status: ok ? 'True' : 'False', reason, message, observedGeneration: gen },
      d.now(),
    );
  };

  if (hasKey) set('HasKey', true, 'KeyPresent', `Secret ${ref.name} key "${ref.key}" holds a key`);
  else if (delivered)
    set('HasKey', false, 'SecretPurged', 'the key was delivered and then removed from the Secret');
  else if (secret.notLabelled) set('HasKey', false, 'SecretNotLabelled', secret.notLabelled);
  else if (secret.value !== undefined)
    set(
      'HasKey',
      false,
      'KeyMalformed',
      `Secret ${ref.name} key "${ref.key}" is not a single-line printable key`,
    );
  else set('HasKey', false, 'SecretMissing', `put the API key into Secret ${ref.name}, key "${ref.key}"`);

  const delivery: [reason: string, message: string] = delivered
    ? ['Delivered', `in the proxy key file of Vps ${mk.spec.vpsRef.name}`]
    : !vps
      ? ['VpsNotFound', `Vps ${mk.spec.vpsRef.name} does not exist in this namespace`]
      : !hasKey && mk.status.delivered
        ? [
            'SecretPurgedNeedsRedelivery',
            `the server needs the key again: put it into Secret ${ref.name}, key "${ref.key}"`,
          ]
        : ['WaitingForVps', `waiting for Vps ${mk.spec.vpsRef.name} to deploy the key`];
  set('Delivered', delivered, ...delivery);
  // Ready (for `kubectl wait --for=condition=Ready mk/x`): the proxy on the server routes this
  // key; until then the reason says what it waits for.
  const ready: [reason: string, message: string] = delivered
    ? ['Ready', 'the proxy on the server injects this key']
    : delivery;
  set('Ready', delivered, ...ready);

  if (mk.spec.purgeSecretAfterDelivery && delivered && secret.value !== undefined) {
    await d.kube.removeSecretKey(namespace, ref.name, ref.key, 'llm-key');
    await d.kube.event(
      'ModelKey',
      m,
      'Normal',
      'SecretPurged',
      `removed key "${ref.key}" from Secret ${ref.name}`,
    );
  }

  const status: ModelKeyStatus = { observedGeneration: gen, hasKey, delivered, conditions };
  if (JSON.stringify(status) !== JSON.stringify(mk.status)) {
    if (delivered && !mk.status.delivered) {
      await d.kube.event('ModelKey', m, 'Normal', 'Delivered', `delivered to Vps ${mk.spec.vpsRef.name}`);
    }
    await d.kube.patchModelKeyStatus(m, status);
  }
  return done();
}
