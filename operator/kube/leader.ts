import type { Registry } from 'prom-client';
import type { Logger } from '../lib/log.ts';
import { isAlreadyExists, isConflict, isNotFound, type KubeApi, resourcePath } from './client.ts';
import { type Clock, jitter, realClock, sleep } from './clock.ts';
import { microTime } from './events.ts';
import { type CoreMetrics, coreMetrics } from './metrics.ts';
import { isRecord } from './object.ts';

export const LEASE_RESOURCE = {
  group: 'coordination.k8s.io',
  version: 'v1',
  plural: 'leases',
  kind: 'Lease',
  namespaced: true,
} as const;

export interface LeaderElectorOptions {
  api: KubeApi;
  namespace: string;
  /** Lease name, e.g. `cannes-operator`; also the `name` label of leader_election_master_status. */
  name: string;
  /** This replica, unique (pod name + random suffix). */
  identity: string;
  /** How long a lease holds without renewal (default 15 s). */
  leaseDurationMs?: number;
  /** The leader gives up when it has not renewed for this long (default 10 s; must be < lease duration). */
  renewDeadlineMs?: number;
  /** Interval between attempts (default 2 s). */
  retryPeriodMs?: number;
  /**
   * Called once on acquiring the lease. `signal` aborts the moment leadership is lost or run()
   * stops. The work it returns is awaited (up to `stopGraceMs`) before the lease is released,
   * so a successor never starts while this leader's reconciles still run.
   */
  onStartedLeading: (signal: AbortSignal) => unknown;
  /** How long to wait for the leader's work to stop before releasing the lease (default 30 s). */
  stopGraceMs?: number;
  /** Called once leadership ends (lost or released). */
  onStoppedLeading?: () => void;
  /** Called when the observed holder changes (including to ourselves). */
  onNewLeader?: (identity: string) => void;
  /** Give the lease up when run()'s signal aborts, so a successor need not wait for expiry (default true). */
  releaseOnCancel?: boolean;
  logger?: Logger;
  registry?: Registry;
  clock?: Clock;
}

interface LeaseSpec {
  holderIdentity: string;
  leaseDurationSeconds: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions: number;
}

interface Lease {
  resourceVersion: string;
  raw: Record<string, unknown>;
  spec: LeaseSpec;
}

type Attempt = 'acquired' | 'heldByOther' | 'failed';

/**
 * client-go's leader election on a `coordination.k8s.io/v1` Lease.
 *
 * Writes carry the Lease's resourceVersion, so of two candidates only one wins each round. A
 * lease held by someone else counts as expired only after `leaseDuration` of OUR clock has
 * passed without the record changing (clock skew between replicas does not matter). The
 * leader stops (aborts `signal`) as soon as it sees another holder or has failed to renew for
 * `renewDeadline`, which is shorter than `leaseDuration`, so two leaders never overlap.
 */
export class LeaderElector {
  readonly #o: LeaderElectorOptions;
  readonly #clock: Clock;
  readonly #leaseMs: number;
  readonly #renewMs: number;
  readonly #retryMs: number;
  readonly #metrics: CoreMetrics | undefined;
  #observedRaw = '';
  #observedAt = 0;
  #observedHolder = '';
  #leading = false;
  #lastRenewAt = 0;

  constructor(opts: LeaderElectorOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? realClock;
    this.#leaseMs = opts.leaseDurationMs ?? 15_000;
    this.#renewMs = opts.renewDeadlineMs ?? 10_000;
    this.#retryMs = opts.retryPeriodMs ?? 2_000;
    if (this.#renewMs >= this.#leaseMs)
      throw new RangeError('renewDeadline must be shorter than leaseDuration');
    if (this.#retryMs >= this.#renewMs)
      throw new RangeError('retryPeriod must be shorter than renewDeadline');
    this.#metrics = opts.registry ? coreMetrics(opts.registry) : undefined;
    this.#metrics?.leaderStatus.set({ name: opts.name }, 0);
  }

  get isLeader(): boolean {
    return this.#leading;
  }

  /**
   * For /healthz (client-go's HealthzAdaptor): false only while this replica believes it leads
   * but has not renewed for longer than the lease plus `toleranceMs`, i.e. its renew loop is stuck.
   */
  healthy(toleranceMs = 20_000): boolean {
    if (!this.#leading) return true;
    return this.#clock.now() - this.#lastRenewAt <= this.#leaseMs + toleranceMs;
  }

  /** Acquires, leads until the lease is lost or `signal` aborts, then returns. Run again to re-campaign. */
  async run(signal: AbortSignal): Promise<void> {
    const log = this.#o.logger?.child({
      lease: `${this.#o.namespace}/${this.#o.name}`,
      identity: this.#o.identity,
    });
    let lastRenew = 0;
    while (!signal.aborted) {
      const attemptAt = this.#clock.now();
      const r = await this.#tryAcquireOrRenew(signal);
      if (r === 'acquired') {
        lastRenew = attemptAt;
        break;
      }
      await sleep(jitter(this.#retryMs, 1.2), signal, this.#clock).catch(() => {});
    }
    if (signal.aborted) return;

    this.#setLeading(true);
    log?.info('became leader');
    const lead = new AbortController();
    this.#lastRenewAt = lastRenew;
    let work: Promise<unknown> = Promise.resolve();
    try {
      work = Promise.resolve(this.#o.onStartedLeading(lead.signal)).catch((err: unknown) => {
        log?.error({ err }, 'the leader work failed');
      });
    } catch (err) {
      log?.error({ err }, 'onStartedLeading threw');
    }
    while (!signal.aborted) {
      // Never sleep past the renew deadline: the decision to stop must not wait for a timer.
      const untilDeadline = lastRenew + this.#renewMs - this.#clock.now();
      await sleep(Math.max(0, Math.min(this.#retryMs, untilDeadline)), signal, this.#clock).catch(() => {});
      if (signal.aborted) break;
      const attemptAt = this.#clock.now();
      const left = lastRenew + this.#renewMs - attemptAt;
      const r =
        left <= 0
          ? 'failed'
          : await this.#tryAcquireOrRenew(AbortSignal.any([signal, AbortSignal.timeout(Math.ceil(left))]));
      if (r === 'acquired') {
        // Count from when the attempt started: others saw the new renewTime no earlier than that.
        lastRenew = attemptAt;
        this.#lastRenewAt = attemptAt;
        continue;
      }
      if (signal.aborted) break;
      if (r === 'heldByOther' || this.#clock.now() - lastRenew >= this.#renewMs) {
        log?.warn({ reason: r }, 'leadership lost');
        break;
      }
    }
    lead.abort(new Error('leadership lost'));
    // The in-flight reconciles see the abort; wait for them before anyone else may lead.
    const grace = new AbortController();
    await Promise.race([
      work,
      sleep(this.#o.stopGraceMs ?? 30_000, grace.signal, this.#clock).catch(() => {}),
    ]);
    grace.abort();
    this.#setLeading(false);
    if (signal.aborted && (this.#o.releaseOnCancel ?? true)) await this.#release(log);
    try {
      this.#o.onStoppedLeading?.();
    } catch (err) {
      log?.error({ err }, 'onStoppedLeading threw');
    }
  }

  #setLeading(v: boolean): void {
    this.#leading = v;
    this.#metrics?.leaderStatus.set({ name: this.#o.name }, v ? 1 : 0);
  }

  #path(name?: string): string {
    return resourcePath(LEASE_RESOURCE, { namespace: this.#o.namespace, name });
  }

  async #get(signal: AbortSignal): Promise<Lease | undefined> {
    try {
      return parseLease(await this.#o.api.request('GET', this.#path(this.#o.name), { signal }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async #tryAcquireOrRenew(signal: AbortSignal): Promise<Attempt> {
    const id = this.#o.identity;
    const now = new Date();
    const durationSeconds = Math.max(1, Math.ceil(this.#leaseMs / 1000));
    try {
      const lease = await this.#get(signal);
      if (!lease) {
        const spec: LeaseSpec = {
          holderIdentity: id,
          leaseDurationSeconds: durationSeconds,
          acquireTime: microTime(now),
          renewTime: microTime(now),
          leaseTransitions: 0,
        };
        await this.#o.api.request('POST', this.#path(), {
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name: this.#o.name, namespace: this.#o.namespace },
            spec,
          },
          signal,
        });
        this.#observe(JSON.stringify(spec), id);
        return 'acquired';
      }
      const rawSpec = JSON.stringify(lease.spec);
      if (rawSpec !== this.#observedRaw) this.#observe(rawSpec, lease.spec.holderIdentity);
      const holder = lease.spec.holderIdentity;
      const heldByOther =
        holder !== '' &&
        holder !== id &&
        this.#observedAt + lease.spec.leaseDurationSeconds * 1000 > this.#clock.now();
      if (heldByOther) return 'heldByOther';
      const spec: LeaseSpec = {
        holderIdentity: id,
        leaseDurationSeconds: durationSeconds,
        acquireTime: holder === id && lease.spec.acquireTime ? lease.spec.acquireTime : microTime(now),
        renewTime: microTime(now),
        leaseTransitions: holder === id ? lease.spec.leaseTransitions : lease.spec.leaseTransitions + 1,
      };
      const raw = lease.raw;
      const metadata = isRecord(raw['metadata']) ? raw['metadata'] : {};
      await this.#o.api.request('PUT', this.#path(this.#o.name), {
        body: { ...raw, metadata: { ...metadata, resourceVersion: lease.resourceVersion }, spec },
        signal,
      });
      this.#observe(JSON.stringify(spec), id);
      return 'acquired';
    } catch (err) {
      if (!isConflict(err) && !isAlreadyExists(err) && !signal.aborted) {
        this.#o.logger?.warn({ err }, 'lease acquire/renew failed');
      }
      return 'failed';
    }
  }

  #observe(raw: string, holder: string): void {
    this.#observedRaw = raw;
    this.#observedAt = this.#clock.now();
    if (holder !== this.#observedHolder) {
      this.#observedHolder = holder;
      if (holder !== '') {
        try {
          this.#o.onNewLeader?.(holder);
        } catch {
          // A callback's failure must not break the election loop.
        }
      }
    }
  }

  /** Hands the lease back (holder '' and 1 s duration) so a successor takes over at its next retry. */
  async #release(log: Logger | undefined): Promise<void> {
    const signal = AbortSignal.timeout(this.#renewMs);
    try {
      const lease = await this.#get(signal);
      if (!lease || lease.spec.holderIdentity !== this.#o.identity) return;
      const now = microTime(new Date());
      const metadata = isRecord(lease.raw['metadata']) ? lease.raw['metadata'] : {};
      await this.#o.api.request('PUT', this.#path(this.#o.name), {
        body: {
          ...lease.raw,
          metadata: { ...metadata, resourceVersion: lease.resourceVersion },
          spec: {
            holderIdentity: '',
            leaseDurationSeconds: 1,
            acquireTime: now,
            renewTime: now,
            leaseTransitions: lease.spec.leaseTransitions,
          },
        },
        signal,
      });
      log?.info('lease released');
    } catch (err) {
      log?.warn({ err }, 'could not release the lease; a successor waits for it to expire');
    }
  }
}

function parseLease(raw: unknown): Lease {
  if (!isRecord(raw) || !isRecord(raw['metadata'])) throw new TypeError('malformed Lease');
  const rv = raw['metadata']['resourceVersion'];
  if (typeof rv !== 'string') throw new TypeError('Lease without resourceVersion');
  const s = isRecord(raw['spec']) ? raw['spec'] : {};
  const spec: LeaseSpec = {
    holderIdentity: typeof s['holderIdentity'] === 'string' ? s['holderIdentity'] : '',
    leaseDurationSeconds: typeof s['leaseDurationSeconds'] === 'number' ? s['leaseDurationSeconds'] : 15,
    leaseTransitions: typeof s['leaseTransitions'] === 'number' ? s['leaseTransitions'] : 0,
  };
  if (typeof s['acquireTime'] === 'string') spec.acquireTime = s['acquireTime'];
  if (typeof s['renewTime'] === 'string') spec.renewTime = s['renewTime'];
  return { resourceVersion: rv, raw, spec };
}
