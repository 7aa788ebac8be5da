import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * The operator's own metrics, every `cannes_...` name in one module (one source of truth;
 * the controller core's controller-runtime metrics are in operator/kube/metrics.ts).
 * docs/monitoring.md is the contract the chart's alerts use.
 */
export const VPS_STATES = ['provisioning', 'ready', 'error', 'deleting'] as const;
export type VpsState = (typeof VPS_STATES)[number];

/** What the Vps metrics need to know about one Vps (no secret, no status internals). */
export interface VpsSnapshot {
  readonly namespace: string;
  readonly name: string;
  readonly state: VpsState;
  readonly rotationIntervalSeconds: number;
  /**
   * Since when the Vps has not been Ready (its Ready condition's last transition, or its
   * creation), so that the not-ready age survives an operator restart; null when Ready.
   */
  readonly notReadySince?: Date | null;
}

/**
 * When a Vps stopped being Ready, from the object as the reconcile saw it: the Ready
 * condition's lastTransitionTime when it says not Ready, `now` when it still says Ready (this
 * reconcile found it not Ready), its creation when it has no Ready condition yet.
 */
export function notReadySince(
  vps: {
    metadata: { creationTimestamp?: string | undefined };
    status?: { conditions?: readonly { type: string; status: string; lastTransitionTime: string }[] };
  },
  state: VpsState,
  now: Date,
): Date | null {
  if (state === 'ready') return null;
  const ready = vps.status?.conditions?.find((c) => c.type === 'Ready');
  const text = ready
    ? ready.status === 'True'
      ? undefined
      : ready.lastTransitionTime
    : vps.metadata.creationTimestamp;
  const t = text === undefined ? Number.NaN : Date.parse(text);
  return Number.isFinite(t) && t <= now.getTime() ? new Date(t) : now;
}

export class OperatorMetrics {
  readonly vps: Gauge<'state'>;
  readonly vpsReady: Gauge<'namespace' | 'name'>;
  readonly notReadyAge: Gauge<'namespace' | 'name'>;
  readonly keyAge: Gauge<'namespace' | 'name'>;
  readonly rotationInterval: Gauge<'namespace' | 'name'>;
  readonly rotations: Counter<'result'>;
  readonly stepDuration: Histogram<'step'>;
  readonly sshConnections: Counter<'auth'>;
  /** key → (snapshot, active key birth); per-object series come only from reconciles (the leader). */
  readonly #known = new Map<
    string,
    { snap: VpsSnapshot; keyBornAt: number | null; notReadySince: number | null }
  >();
  readonly #now: () => number;

  constructor(registry: Registry, now: () => number = Date.now) {
    const known = this.#known;
    this.#now = now;
    this.vps = new Gauge({
      name: 'cannes_vps',
      help: 'Vps objects by state (provisioning, ready, error, deleting).',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const counts = Object.fromEntries(VPS_STATES.map((s) => [s, 0])) as Record<VpsState, number>;
        for (const { snap } of known.values()) counts[snap.state]++;
        for (const s of VPS_STATES) this.set({ state: s }, counts[s]);
      },
    });
    this.vpsReady = new Gauge({
      name: 'cannes_vps_ready',
      help: '1 when the Vps is Ready, else 0.',
      labelNames: ['namespace', 'name'],
      registers: [registry],
    });
    this.notReadyAge = new Gauge({
      name: 'cannes_vps_not_ready_seconds',
      help: 'How long the Vps has not been Ready (0 when Ready), computed at scrape time.',
      labelNames: ['namespace', 'name'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { snap, notReadySince } of known.values()) {
          const seconds = notReadySince === null ? 0 : Math.max(0, (now() - notReadySince) / 1000);
          this.set({ namespace: snap.namespace, name: snap.name }, seconds);
        }
      },
    });
    this.keyAge = new Gauge({
      name: 'cannes_ssh_key_age_seconds',
      help: "Age of the Vps's active SSH key.",
      labelNames: ['namespace', 'name'],
      registers: [registry],
      collect() {
        this.reset();
        for (const { snap, keyBornAt } of known.values()) {
          if (keyBornAt !== null)
            this.set({ namespace: snap.namespace, name: snap.name }, (now() - keyBornAt) / 1000);
        }
      },
    });
    this.rotationInterval = new Gauge({
      name: 'cannes_ssh_key_rotation_interval_seconds',
      help: "The Vps's spec.sshKeyRotation.interval.",
      labelNames: ['namespace', 'name'],
      registers: [registry],
    });
    this.rotations = new Counter({
      name: 'cannes_ssh_key_rotations_total',
      help: 'Finished SSH key rotations by result.',
      labelNames: ['result'],
      registers: [registry],
    });
    for (const result of ['success', 'error']) this.rotations.inc({ result }, 0);
    this.stepDuration = new Histogram({
      name: 'cannes_provisioning_step_duration_seconds',
      help: 'Time per provisioning step.',
      labelNames: ['step'],
      buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers: [registry],
    });
    this.sshConnections = new Counter({
      name: 'cannes_ssh_connections_total',
      help: 'SSH connection attempts to servers, by authentication: pinned (our key, the pinned host key) or rescue (the one-time password).',
      labelNames: ['auth'],
      registers: [registry],
    });
    for (const auth of ['pinned', 'rescue']) this.sshConnections.inc({ auth }, 0);
  }

  /** A step of the Vps reconcile finished (`rotate` also counts a rotation). */
  observeStep = (step: string, seconds: number, ok: boolean): void => {
    this.stepDuration.observe({ step }, seconds);
    if (step === 'rotate') this.rotations.inc({ result: ok ? 'success' : 'error' });
  };

  /** After each reconcile of a Vps. */
  observeVps(key: string, snap: VpsSnapshot, keyBornAt: Date | null): void {
    // The earliest known start of a not-Ready spell: a reconcile that saw an older object
    // (Ready still True) must not restart the clock.
    const before = this.#known.get(key)?.notReadySince ?? null;
    const seen = snap.state === 'ready' ? null : (snap.notReadySince?.getTime() ?? this.#now());
    const since = seen === null ? null : before === null ? seen : Math.min(before, seen);
    this.#known.set(key, { snap, keyBornAt: keyBornAt?.getTime() ?? null, notReadySince: since });
    const labels = { namespace: snap.namespace, name: snap.name };
    this.vpsReady.set(labels, snap.state === 'ready' ? 1 : 0);
    this.rotationInterval.set(labels, snap.rotationIntervalSeconds);
  }

  /** The Vps is gone: its series go with it. */
  forgetVps(key: string): void {
    const k = this.#known.get(key);
    if (!k) return;
    this.#known.delete(key);
    const labels = { namespace: k.snap.namespace, name: k.snap.name };
    this.vpsReady.remove(labels);
    this.rotationInterval.remove(labels);
  }
}
