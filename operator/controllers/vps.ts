/**
 * The Vps controller: docs/design.md §4 as one level-triggered reconcile. Each call re-reads
 * what it needs and walks the table of named steps (vps-steps.ts): a step whose fact is
 * recorded only reports its condition; the first one that is not is run, then assessed again.
 * Every step is idempotent and resumable after a crash at any line: a step's result is recorded
 * (Postgres row, annotation) only after the step succeeded, and re-running a step whose result
 * was lost is harmless (see the comment on each step).
 */

import { CannesError, reasonOf } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import type { VpsStatus } from '../api/schema.ts';
import { ANNOTATION_SERVER_ID, FINALIZER } from '../api/schema.ts';
import { type Condition, setCondition } from '../kube/conditions.ts';
import { done, type Result, requeueAfter } from '../kube/controller.ts';
import { objectKey } from '../kube/object.ts';
import { withCancel } from '../lib/cancel.ts';
import { faultPoint } from '../lib/faults.ts';
import type { VpsObject } from './ports.ts';
import {
  type Assessment,
  cloudToken,
  type Facts,
  nextRotationInMs,
  type StepContext,
  VPS_STEPS,
  type VpsDeps,
  type VpsStep,
} from './vps-steps.ts';

export { DEPLOYED_ANNOTATION, serverName, VPS_STEPS, type VpsDeps } from './vps-steps.ts';

// The conditions the runner sets itself; each step's own condition is in the step table.
const T = { Deleting: 'Deleting', Ready: 'Ready' } as const;

/** Collects status booleans and conditions during one reconcile; written once at the end. */
class StatusDraft {
  readonly status: VpsStatus;
  /** Set when the finalizer was removed: the object is about to disappear. */
  released = false;
  /** When the active SSH key was made (null until there is one). */
  keyBornAt: Date | null = null;
  #conditions: Condition[];
  readonly #generation: number;
  readonly #now: Date;

  /** The status as last written (or read): a write that would change nothing is skipped. */
  written: string;

  constructor(vps: VpsObject, now: Date) {
    this.written = JSON.stringify(vps.status);
    this.status = { ...vps.status, observedGeneration: vps.metadata.generation ?? 0 };
    this.#conditions = [...((vps.status.conditions ?? []) as Condition[])];
    this.#generation = vps.metadata.generation ?? 0;
    this.#now = now;
  }

  set(type: string, ok: boolean | 'Unknown', reason: string, message: string): void {
    const status = ok === 'Unknown' ? 'Unknown' : ok ? 'True' : 'False';
    this.#conditions = setCondition(
      this.#conditions,
      { type, status, reason, message, observedGeneration: this.#generation },
      this.#now,
    );
  }

  drop(type: string): void {
    this.#conditions = this.#conditions.filter((c) => c.type !== type);
  }

  result(): VpsStatus {
    return { ...this.status, conditions: this.#conditions };
  }
}

export async function reconcileVps(
  vps: VpsObject,
  d: VpsDeps,
  signal: AbortSignal = new AbortController().signal,
): Promise<Result> {
  const draft = new StatusDraft(vps, d.now());
  try {
    const deleting = vps.metadata.deletionTimestamp !== undefined;
    // Every Hetzner request, SSH command and store query below carries this cancellation.
    const result = await withCancel(signal, () =>
      deleting ? finalize(vps, d, draft) : provision(vps, d, draft, signal),
    );
    await writeStatus(vps, d, draft);
    d.report?.(vps, deleting ? 'deleting' : draft.status.ready ? 'ready' : 'provisioning', draft.keyBornAt);
    return result;
  } catch (err) {
    // Cancelled: this operator no longer leads (or is stopping); the successor reports.
    if (signal.aborted) throw err;
    d.report?.(vps, vps.metadata.deletionTimestamp ? 'deleting' : 'error', draft.keyBornAt);
    // Every failure is a condition (with a reason a person can act on) and a Warning Event;
    // the error goes back to the queue, which retries unless it is terminal.
    const reason = reasonOf(err, 'ReconcileFailed');
    const message = safeMessage(err);
    draft.set(T.Ready, false, reason, message);
    draft.status.ready = false;
    await writeStatus(vps, d, draft).catch((e: unknown) =>
      d.log.warn({ err: safeMessage(e) }, 'status write failed'),
    );
    await d.kube.event('Vps', vps.metadata, 'Warning', reason, message);
    throw err;
  }
}

async function writeStatus(vps: VpsObject, d: VpsDeps, draft: StatusDraft): Promise<void> {
  const next = draft.result();
  const text = JSON.stringify(next);
  // Once the finalizer is gone the object may be gone too: nothing left to report on.
  if (draft.released || text === draft.written) return;
  if (vps.metadata.deletionTimestamp && !vps.metadata.finalizers.includes(FINALIZER)) return;
  await d.kube.patchVpsStatus(vps.metadata, next);
  draft.written = text;
}

/** Error text safe for a condition or an Event: our own messages never carry secrets. */
function safeMessage(err: unknown): string {
  if (err instanceof CannesError) return err.message;
  return 'internal error (see operator logs)';
}

async function timed<R>(d: VpsDeps, step: string, fn: () => Promise<R>): Promise<R> {
  const start = performance.now();
  let ok = false;
  try {
    const r = await fn();
    ok = true;
    return r;
  } finally {
    d.observe?.(step, (performance.now() - start) / 1000, ok);
  }
}

/** Walks the step table: report what is done, run the first step that is not, stop on a wait. */
async function provision(
  vps: VpsObject,
  d: VpsDeps,
  draft: StatusDraft,
  signal: AbortSignal,
): Promise<Result> {
  const state = await d.store.getVps(vps.metadata.uid);
  const facts: Facts = { record: state?.record ?? null, activeKey: state?.activeKey ?? null };
  for (const step of VPS_STEPS) {
    signal.throwIfAborted();
    const ctx = stepContext(vps, d, facts, signal, step);
    const settled = collect(vps, d, step, facts);
    let a = await step.assess(ctx);
    const ran = settled !== undefined || a.state === 'run';
    if (settled === undefined && a.state === 'run' && step.background && d.inflight) {
      // The step waits on Hetzner and boots off the worker; its end re-enqueues this Vps.
      startInFlight(vps, d, step, ctx, signal);
      draft.status.ready = false;
      draft.set(T.Ready, false, 'Provisioning', `step ${step.name} in progress`);
      return requeueAfter(IN_FLIGHT_RECHECK_MS);
    }
    if (ran) {
      const note = settled ?? (await timed(d, step.name, () => step.run(ctx)));
      if (step.event) await d.kube.event('Vps', vps.metadata, 'Normal', step.event, note);
      a = await step.assess(ctx);
      // A step must record the fact that says it is done, or every resync would repeat it.
      if (a.state === 'run')
        throw new CannesError('StepNotRecorded', `step ${step.name} ran but did not record that it is done`);
    }
    draft.keyBornAt = facts.activeKey?.createdAt ?? null;
    report(draft, step, a);
    // A first provisioning shows its conditions as it goes (ServerCreated, HasSshKey, ...):
    // written after a step that ran, never when nothing changed.
    if (ran) await writeStatus(vps, d, draft);
    if (a.state === 'wait' && step.gatesReady) {
      draft.status.ready = false;
      draft.set(T.Ready, false, a.reason, a.message);
      return done();
    }
    if (step === lastGate) {
      draft.status.ready = true;
      draft.set(T.Ready, true, 'Provisioned', 'gateway answers through the proxy');
    }
  }
  const ctx = stepContext(vps, d, facts, signal, VPS_STEPS[0] as VpsStep);
  return requeueAfter(Math.max(1000, nextRotationInMs(ctx)));
}

/** A check on an in-flight step in case its re-enqueue was lost (it normally comes at once). */
const IN_FLIGHT_RECHECK_MS = 300_000;

/** `<namespace/name>#<uid>#<step>`: the queue key first (inflight.ts re-enqueues it). */
const inFlightObject = (vps: VpsObject) => `${objectKey(vps.metadata)}#${vps.metadata.uid}`;
const inFlightKey = (vps: VpsObject, step: VpsStep) => `${inFlightObject(vps)}#${step.name}`;

function startInFlight(
  vps: VpsObject,
  d: VpsDeps,
  step: VpsStep,
  ctx: StepContext,
  signal: AbortSignal,
): void {
  const key = inFlightKey(vps, step);
  if (d.inflight?.peek(key)) return;
  d.inflight?.start(key, signal, ctx.facts, () => timed(d, step.name, () => step.run(ctx)));
}

/**
 * A background step that settled since the last reconcile: its error is this reconcile's (the
 * queue retries), its result the step's note, with what it recorded on the way (the informer
 * cache may not show its annotations yet; the store read above may predate its writes).
 */
function collect(vps: VpsObject, d: VpsDeps, step: VpsStep, facts: Facts): string | undefined {
  if (!step.background || !d.inflight) return undefined;
  const settled = d.inflight.take(inFlightKey(vps, step));
  if (settled === undefined || settled.state === 'running') return undefined;
  if (settled.state === 'failed') throw settled.error;
  const got = settled.facts as Facts;
  if (got.record) facts.record = got.record;
  if (got.activeKey) facts.activeKey = got.activeKey;
  if (got.deployed !== undefined) facts.deployed = got.deployed;
  if (got.hardened !== undefined) facts.hardened = got.hardened;
  if (got.tailnet !== undefined) facts.tailnet = got.tailnet;
  if (got.architecture !== undefined) facts.architecture ??= got.architecture;
  // The power state the create answer showed: the rescue step that follows needs no GET.
  if (got.seenStatus !== undefined) facts.seenStatus ??= got.seenStatus;
  return settled.note;
}

const lastGate = [...VPS_STEPS].reverse().find((s) => s.gatesReady);

function stepContext(
  vps: VpsObject,
  d: VpsDeps,
  facts: Facts,
  signal: AbortSignal,
  step: VpsStep,
): StepContext {
  return {
    vps,
    d,
    facts,
    signal,
    fault(label) {
      const point = `${step.name}:${label}`;
      if (!step.faultPoints.includes(point))
        throw new Error(`fault point ${point} is not declared in the step table`);
      faultPoint(point);
    },
  };
}

/** A step's assessment as its condition and status boolean. */
function report(draft: StatusDraft, step: VpsStep, a: Assessment): void {
  if (a.state === 'run') return;
  if (a.state === 'done' && a.absent) {
    // A step that does not apply leaves no trace (a spec.tailnet removed later drops its own).
    if (step.status) delete draft.status[step.status];
    if (step.condition) draft.drop(step.condition);
    return;
  }
  const ok = a.state === 'done' && a.ok !== false;
  if (step.status) draft.status[step.status] = ok as never;
  Object.assign(draft.status, a.status ?? {});
  if (step.condition) draft.set(step.condition, ok, a.reason, a.message);
}

async function finalize(vps: VpsObject, d: VpsDeps, draft: StatusDraft): Promise<Result> {
  const m = vps.metadata;
  if (!m.finalizers.includes(FINALIZER)) return done();
  // A step still running for this Vps stops first: nothing of it lands after the row is gone.
  await d.inflight?.cancel(inFlightObject(vps));
  // Deletion finds its server by label, never by the row: a row refused for its routing MAC
  // (RoutingFieldsUnauthenticated) does not keep the Vps from going away.
  const state = await d.store.getVps(m.uid).catch((err: unknown) => {
    if (reasonOf(err) === 'RoutingFieldsUnauthenticated') return null;
    throw err;
  });
  if (vps.spec.deletionPolicy === 'Delete') {
    let token: Secret;
    try {
      token = await cloudToken(vps, d, 'delete the server (or set deletionPolicy: Retain)');
    } catch (err) {
      // A purged token makes deletion wait, saying what to supply; the Secret watch retries.
      draft.set(T.Deleting, false, reasonOf(err), safeMessage(err));
      await d.kube.event('Vps', m, 'Warning', reasonOf(err), safeMessage(err));
      return done();
    }
    // Only a server that carries this Vps's uid as its label is ours to delete: never an id
    // from the user-writable annotation (a Vps copied from another's YAML carries the other's
    // id), and never a recorded id whose server no longer says it is ours. The label also finds
    // a server created just before a crash and recorded nowhere else.
    const ours = await timed(d, 'delete_server', async () => {
      const found = await d.hcloud.findServerByVpsUid(token, m.uid);
      if (found) await d.hcloud.deleteServer(token, found.id);
      return found;
    });
    const recorded = state?.record.serverId ?? null;
    if (ours) await d.kube.event('Vps', m, 'Normal', 'ServerDeleted', `Hetzner server ${ours.id} deleted`);
    else if (recorded !== null && m.annotations[ANNOTATION_SERVER_ID] === String(recorded))
      await d.kube.event(
        'Vps',
        m,
        'Normal',
        'ServerGone',
        `no Hetzner server carries this Vps's label any more (server ${recorded} is gone or not ours): nothing deleted`,
      );
    else
      await d.kube.event(
        'Vps',
        m,
        'Normal',
        'ServerGone',
        "no Hetzner server carries this Vps's label: nothing deleted",
      );
  } else {
    await d.kube.event(
      'Vps',
      m,
      'Normal',
      'ServerRetained',
      'deletionPolicy Retain: the Hetzner server is kept',
    );
  }
  await d.store.deleteVps(m.uid);
  await d.kube.removeFinalizer('Vps', m);
  draft.released = true;
  return done();
}
