import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { QueueMetricsSink } from './queue.ts';

/**
 * The controller core's metrics: controller-runtime's names, labels and buckets, so existing
 * dashboards and alerts for Go operators work unchanged. The operator's own `cannes_...`
 * metrics are in operator/metrics/. Metrics are registered on the Registry passed in, never on
 * prom-client's global one.
 */

export function createRegistry(opts: { processMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  // process_resident_memory_bytes, nodejs_eventloop_lag_seconds, ...: what an SRE asks first.
  if (opts.processMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // Gauges named *_total make `promtool check metrics` warn (docs/monitoring.md): drop them.
    for (const name of [
      'nodejs_active_handles_total',
      'nodejs_active_requests_total',
      'nodejs_active_resources_total',
    ]) {
      registry.removeSingleMetric(name);
    }
  }
  return registry;
}

// controller-runtime's reconcile_time_seconds buckets (pkg/internal/controller/metrics).
const RECONCILE_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25,
  1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
];
// client-go workqueue: ExponentialBuckets(10e-9, 10, 12).
const QUEUE_BUCKETS = Array.from({ length: 12 }, (_, i) => 1e-8 * 10 ** i);

export const RECONCILE_RESULTS = ['success', 'error', 'requeue', 'requeue_after'] as const;
export type ReconcileResultLabel = (typeof RECONCILE_RESULTS)[number];

export interface InFlightSource {
  inFlight(): { totalSeconds: number; longestSeconds: number };
}

export class CoreMetrics {
  readonly reconcileTotal: Counter<'controller' | 'result'>;
  readonly reconcileErrors: Counter<'controller'>;
  readonly terminalReconcileErrors: Counter<'controller'>;
  readonly reconcilePanics: Counter<'controller'>;
  readonly reconcileTime: Histogram<'controller'>;
  readonly maxConcurrentReconciles: Gauge<'controller'>;
  readonly activeWorkers: Gauge<'controller'>;

  readonly queueDepth: Gauge<'name' | 'controller'>;
  readonly queueAdds: Counter<'name' | 'controller'>;
  readonly queueDuration: Histogram<'name' | 'controller'>;
  readonly workDuration: Histogram<'name' | 'controller'>;
  readonly unfinishedWork: Gauge<'name' | 'controller'>;
  readonly longestRunning: Gauge<'name' | 'controller'>;
  readonly queueRetries: Counter<'name' | 'controller'>;

  readonly leaderStatus: Gauge<'name'>;

  readonly informerWatchRestarts: Counter<'resource' | 'reason'>;
  readonly informerRelists: Counter<'resource' | 'reason'>;
  readonly informerParseErrors: Counter<'resource'>;
  readonly informerSynced: Gauge<'resource'>;
  readonly informerObjects: Gauge<'resource'>;

  readonly restClientRequests: Counter<'code' | 'method' | 'host'>;

  readonly eventsFailed: Counter<'reason'>;
  readonly statusConflicts: Counter<'resource'>;

  readonly #inFlight = new Map<string, InFlightSource>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.reconcileTotal = new Counter({
      name: 'controller_runtime_reconcile_total',
      help: 'Total number of reconciliations per controller',
      labelNames: ['controller', 'result'],
      registers,
    });
    this.reconcileErrors = new Counter({
      name: 'controller_runtime_reconcile_errors_total',
      help: 'Total number of reconciliation errors per controller',
      labelNames: ['controller'],
      registers,
    });
    this.terminalReconcileErrors = new Counter({
      name: 'controller_runtime_terminal_reconcile_errors_total',
      help: 'Total number of terminal reconciliation errors per controller',
      labelNames: ['controller'],
      registers,
    });
    this.reconcilePanics = new Counter({
      name: 'controller_runtime_reconcile_panics_total',
      help: 'Total number of reconciliation panics (programming errors) per controller',
      labelNames: ['controller'],
      registers,
    });
    this.reconcileTime = new Histogram({
      name: 'controller_runtime_reconcile_time_seconds',
      help: 'Length of time per reconciliation per controller',
      labelNames: ['controller'],
      buckets: RECONCILE_BUCKETS,
      registers,
    });
    this.maxConcurrentReconciles = new Gauge({
      name: 'controller_runtime_max_concurrent_reconciles',
      help: 'Maximum number of concurrent reconciles per controller',
      labelNames: ['controller'],
      registers,
    });
    this.activeWorkers = new Gauge({
      name: 'controller_runtime_active_workers',
      help: 'Number of currently used workers per controller',
      labelNames: ['controller'],
      registers,
    });

    const ql: ('name' | 'controller')[] = ['name', 'controller'];
    this.queueDepth = new Gauge({
      name: 'workqueue_depth',
      help: 'Current depth of workqueue',
      labelNames: ql,
      registers,
    });
    this.queueAdds = new Counter({
      name: 'workqueue_adds_total',
      help: 'Total number of adds handled by workqueue',
      labelNames: ql,
      registers,
    });
    this.queueDuration = new Histogram({
      name: 'workqueue_queue_duration_seconds',
      help: 'How long in seconds an item stays in workqueue before being requested',
      labelNames: ql,
      buckets: QUEUE_BUCKETS,
      registers,
    });
    this.workDuration = new Histogram({
      name: 'workqueue_work_duration_seconds',
      help: 'How long in seconds processing an item from workqueue takes',
      labelNames: ql,
      buckets: QUEUE_BUCKETS,
      registers,
    });
    const inFlight = this.#inFlight;
    this.unfinishedWork = new Gauge({
      name: 'workqueue_unfinished_work_seconds',
      help: 'How many seconds of work has been done that is in progress and has not been observed by work_duration',
      labelNames: ql,
      registers,
      collect() {
        for (const [name, src] of inFlight) this.set({ name, controller: name }, src.inFlight().totalSeconds);
      },
    });
    this.longestRunning = new Gauge({
      name: 'workqueue_longest_running_processor_seconds',
      help: 'How many seconds has the longest running processor for workqueue been running',
      labelNames: ql,
      registers,
      collect() {
        for (const [name, src] of inFlight)
          this.set({ name, controller: name }, src.inFlight().longestSeconds);
      },
    });
    this.queueRetries = new Counter({
      name: 'workqueue_retries_total',
      help: 'Total number of retries handled by workqueue',
      labelNames: ql,
      registers,
    });

    this.leaderStatus = new Gauge({
      name: 'leader_election_master_status',
      help: 'Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master',
      labelNames: ['name'],
      registers,
    });

    this.informerWatchRestarts = new Counter({
      name: 'cannes_informer_watch_restarts_total',
      help: 'Watches restarted, by reason (closed, timeout, stale, error, expired)',
      labelNames: ['resource', 'reason'],
      registers,
    });
    this.informerRelists = new Counter({
      name: 'cannes_informer_relists_total',
      help: 'Full lists, by reason (initial, expired, resync, error)',
      labelNames: ['resource', 'reason'],
      registers,
    });
    this.informerParseErrors = new Counter({
      name: 'cannes_informer_parse_errors_total',
      help: 'Objects from the API server that failed to parse and were left out of the cache',
      labelNames: ['resource'],
      registers,
    });
    this.informerSynced = new Gauge({
      name: 'cannes_informer_synced',
      help: '1 once the informer has completed its first list',
      labelNames: ['resource'],
      registers,
    });
    this.informerObjects = new Gauge({
      name: 'cannes_informer_objects',
      help: 'Objects in the informer cache',
      labelNames: ['resource'],
      registers,
    });
    this.restClientRequests = new Counter({
      name: 'rest_client_requests_total',
      help: 'Number of HTTP requests to the Kubernetes API server, partitioned by status code, method, and host',
      labelNames: ['code', 'method', 'host'],
      registers,
    });
    this.eventsFailed = new Counter({
      name: 'cannes_events_failed_total',
      help: 'Kubernetes Events that could not be written (the reconcile carries on)',
      labelNames: ['reason'],
      registers,
    });
    this.statusConflicts = new Counter({
      name: 'cannes_status_update_conflicts_total',
      help: 'Status updates retried after a 409 Conflict',
      labelNames: ['resource'],
      registers,
    });
  }

  /** Pre-initialises one controller's series to 0 (as controller-runtime does) and returns its queue sink. */
  registerController(name: string, workers: number, queue: InFlightSource): QueueMetricsSink {
    for (const result of RECONCILE_RESULTS) this.reconcileTotal.inc({ controller: name, result }, 0);
    this.reconcileErrors.inc({ controller: name }, 0);
    this.terminalReconcileErrors.inc({ controller: name }, 0);
    this.reconcilePanics.inc({ controller: name }, 0);
    this.maxConcurrentReconciles.set({ controller: name }, workers);
    this.activeWorkers.set({ controller: name }, 0);
    this.#inFlight.set(name, queue);
    const labels = { name, controller: name };
    this.queueAdds.inc(labels, 0);
    this.queueRetries.inc(labels, 0);
    this.queueDepth.set(labels, 0);
    return {
      add: () => this.queueAdds.inc(labels),
      depth: (n) => this.queueDepth.set(labels, n),
      queueDuration: (s) => this.queueDuration.observe(labels, s),
      workDuration: (s) => this.workDuration.observe(labels, s),
      retry: () => this.queueRetries.inc(labels),
    };
  }
}

const byRegistry = new WeakMap<Registry, CoreMetrics>();

/** The core metrics on `registry`, created on first use (a registry rejects a name registered twice). */
export function coreMetrics(registry: Registry): CoreMetrics {
  let m = byRegistry.get(registry);
  if (!m) {
    m = new CoreMetrics(registry);
    byRegistry.set(registry, m);
  }
  return m;
}
