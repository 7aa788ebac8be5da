/**
 * `cannes-operator run`: connects the pieces. Order matters at start-up: the configuration
 * and the keyring are checked before anything connects (a bad master key refuses to start
 * without touching the database), then Postgres is migrated, then the informers start (on
 * every replica, for a fast failover), then the controllers run on the leader only.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { CannesError } from '../common/errors.ts';
import { bundleVersion, hardeningBundle, makeBundle } from './adapters/bundle.ts';
import { HcloudPort } from './adapters/hcloud.ts';
import { KubePort, MODELKEY_RESOURCE, VPS_RESOURCE } from './adapters/kube.ts';
import { RemotePort } from './adapters/ssh.ts';
import { controllerStore, rotationStore } from './adapters/store.ts';
import { parseModelKey, parseVps } from './api/parse.ts';
import { parseRunConfig, type RunConfig } from './config.ts';
import { InFlight } from './controllers/inflight.ts';
import { reconcileModelKey } from './controllers/modelkey.ts';
import type { ModelKeyObject, VpsObject } from './controllers/ports.ts';
import { reconcileVps } from './controllers/vps.ts';
import { HcloudClient } from './hcloud/client.ts';
import { type Check, startMetricsServer, startProbeServer } from './http/server.ts';
import { KubeClient } from './kube/client.ts';
import { loadConnection } from './kube/connection.ts';
import { Controller, done } from './kube/controller.ts';
import { EventRecorder } from './kube/events.ts';
import { Informer } from './kube/informer.ts';
import { LeaderElector } from './kube/leader.ts';
import { createRegistry } from './kube/metrics.ts';
import { type KubeObject, objectKey } from './kube/object.ts';
import { parseGoDuration } from './lib/duration.ts';
import { createLogger, type Logger } from './lib/log.ts';
import { afterQuiet, collectGarbage } from './lib/memory.ts';
import { notReadySince, OperatorMetrics } from './metrics/metrics.ts';
import { createStoreMetrics, loadKeyringFile, PostgresStore } from './store/index.ts';
import { OPERATOR_VERSION } from './version.ts';

/** The proxy bundle shipped to every server: next to the compiled operator, or $CANNES_PROXY_BUNDLE. */
export function readProxyBundle(env: NodeJS.ProcessEnv): string {
  const candidates = [
    env['CANNES_PROXY_BUNDLE'],
    fileURLToPath(new URL('../proxy/cannes-proxy.mjs', import.meta.url)),
    'dist/proxy/cannes-proxy.mjs',
  ].filter((p): p is string => typeof p === 'string' && p !== '');
  for (const p of candidates) if (existsSync(p)) return readFileSync(p, 'utf8');
  throw new CannesError(
    'ProxyBundleMissing',
    'dist/proxy/cannes-proxy.mjs not found: run `make build` first',
  );
}

/**
 * The operator's probes. `/healthz` is the elector's health: unhealthy while this replica
 * believes it leads but its renew loop is stuck (a leader that cannot renew must be restarted,
 * not left thinking it leads); `/readyz` waits for the informers' first list.
 */
export function operatorProbes(parts: {
  elector: () => { healthy(): boolean } | undefined;
  vpses: { readonly hasSynced: boolean };
  modelKeys: { readonly hasSynced: boolean };
}): { healthz: Check[]; readyz: Check[] } {
  return {
    healthz: [{ name: 'leader-election', check: () => parts.elector()?.healthy() ?? true }],
    readyz: [
      { name: 'informer-vps', check: () => parts.vpses.hasSynced },
      { name: 'informer-modelkey', check: () => parts.modelKeys.hasSynced },
    ],
  };
}

export async function runOperator(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  // A bad configuration throws before anything starts; main prints it as one line (exit 2).
  const cfg = parseRunConfig(argv, env);
  const log = createLogger('cannes-operator', { level: cfg.logLevel, format: cfg.logFormat });
  const shutdown = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => shutdown.abort());
  try {
    return await run(cfg, env, log, shutdown.signal);
  } catch (err) {
    // Our own errors carry safe messages; anything else is summarised, never dumped.
    const message = err instanceof CannesError ? `${err.reason}: ${err.message}` : 'unexpected error';
    // A system error's code (EADDRINUSE, ECONNREFUSED, ...) says what failed and carries no secret.
    const code = err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
    log.error(
      { reason: err instanceof CannesError ? err.reason : 'Unexpected', ...(code ? { code } : {}) },
      message,
    );
    if (!(err instanceof CannesError))
      log.debug({ stack: err instanceof Error ? err.stack : undefined }, 'stack');
    return 1;
  }
}

/** What the operator holds while it runs: opened in this order, closed in the reverse. */
interface Parts {
  readonly cfg: RunConfig;
  readonly log: Logger;
  readonly registry: ReturnType<typeof createRegistry>;
  readonly ours: OperatorMetrics;
  readonly store: PostgresStore;
  readonly api: KubeClient;
  readonly events: EventRecorder;
  readonly vpses: Informer<VpsObject>;
  readonly modelKeys: Informer<ModelKeyObject>;
  readonly kube: KubePort;
}

async function openParts(cfg: RunConfig, env: NodeJS.ProcessEnv, log: Logger): Promise<Parts> {
  const keyring = await loadKeyringFile(cfg.masterKeysFile);
  const registry = createRegistry();
  const ours = new OperatorMetrics(registry);
  const { store } = await PostgresStore.open({
    connectionString: cfg.databaseUrl.reveal(),
    keyring,
    env,
    logger: log,
    // cannes_store_unavailable_total and cannes_store_decrypt_failures_total feed two alerts.
    metrics: createStoreMetrics(registry),
  });
  const api = new KubeClient(await loadConnection(), { registry });
  const events = new EventRecorder({ api, reportingInstance: cfg.identity, registry, logger: log });
  const informer = <T extends KubeObject>(resource: typeof VPS_RESOURCE, parse: (o: unknown) => T) =>
    new Informer<T>({
      api,
      resource,
      ...(cfg.watchNamespace === undefined ? {} : { namespace: cfg.watchNamespace }),
      parse,
      registry,
      logger: log,
      resyncMs: cfg.resyncMs,
    });
  const vpses = informer<VpsObject>(VPS_RESOURCE, parseVps);
  const modelKeys = informer<ModelKeyObject>(MODELKEY_RESOURCE, parseModelKey);
  const kube = new KubePort({ api, events, vpses, modelKeys });
  return { cfg, log, registry, ours, store, api, events, vpses, modelKeys, kube };
}

/** The real adapters behind the Vps reconcile's ports. */
function vpsDepsFor(p: Parts, proxyBundle: string, inflight: InFlight) {
  const { cfg, ours } = p;
  const bundleOpts = {
    proxyBundle,
    providerOrigins: cfg.providerOrigins,
    ...(cfg.nodeDistUrl === undefined ? {} : { nodeDistUrl: cfg.nodeDistUrl }),
    nodeSha256: cfg.nodeSha256,
  };
  return {
    inflight,
    kube: p.kube,
    hcloud: new HcloudPort(new HcloudClient({ endpoint: cfg.hcloudEndpoint, registry: p.registry })),
    remote: new RemotePort({
      rotationStore: rotationStore(p.store),
      connect: { onAttempt: (auth) => ours.sshConnections.inc({ auth }) },
      ...(cfg.sshPort === undefined ? {} : { port: cfg.sshPort }),
    }),
    store: controllerStore(p.store),
    bundle: makeBundle(bundleOpts),
    bundleVersion: bundleVersion(bundleOpts),
    hardening: hardeningBundle,
    now: () => new Date(),
    log: p.log,
    observe: ours.observeStep,
    report: (
      vps: VpsObject,
      state: 'provisioning' | 'ready' | 'error' | 'deleting',
      keyBornAt: Date | null,
    ) =>
      ours.observeVps(
        objectKey(vps.metadata),
        {
          namespace: vps.metadata.namespace ?? 'default',
          name: vps.metadata.name,
          state,
          rotationIntervalSeconds: parseGoDuration(vps.spec.sshKeyRotation.interval) / 1000,
          notReadySince: notReadySince(vps, state, new Date()),
        },
        keyBornAt,
      ),
  };
}

/** The two controllers, each watching the other kind, and the steps they run off the workers. */
function controllersFor(p: Parts, proxyBundle: string) {
  const { cfg, vpses, modelKeys, registry, log } = p;
  // Long steps run off the workers; their end re-enqueues the Vps. When the last one of a burst
  // has settled (and nothing new started for 10 s), its garbage is collected at once.
  const burstEnd = afterQuiet(collectGarbage, 10_000);
  const inflight = new InFlight(
    (key) => vpsController.enqueue(key.split('#')[0] ?? ''),
    cfg.maxInFlight,
    () => burstEnd.poke(),
  );
  const vpsDeps = vpsDepsFor(p, proxyBundle, inflight);
  const vpsController = new Controller<VpsObject>({
    name: 'vps',
    informer: vpses,
    workers: cfg.workers,
    registry,
    logger: log,
    reconcile: async ({ key }, { signal }) => {
      const vps = vpses.get(key);
      if (!vps) {
        p.ours.forgetVps(key);
        return done();
      }
      return reconcileVps(vps, vpsDeps, signal);
    },
  });
  // A ModelKey change reconciles its Vps (which delivers the key).
  vpsController.watch(modelKeys, (mk) => [
    objectKey({ namespace: mk.metadata.namespace, name: mk.spec.vpsRef.name }),
  ]);
  const mkController = new Controller<ModelKeyObject>({
    name: 'modelkey',
    informer: modelKeys,
    workers: cfg.workers,
    registry,
    logger: log,
    reconcile: async ({ key }) => {
      const mk = modelKeys.get(key);
      return mk ? reconcileModelKey(mk, { kube: p.kube, now: () => new Date() }) : done();
    },
  });
  // A Vps deploy (its delivered-keys annotation) updates its ModelKeys' `delivered`.
  mkController.watch(vpses, (vps) =>
    modelKeys
      .list()
      .filter(
        (mk) => mk.metadata.namespace === vps.metadata.namespace && mk.spec.vpsRef.name === vps.metadata.name,
      )
      .map((mk) => objectKey(mk.metadata)),
  );
  // Steps in flight were started under the same signal: they stop with it, and the lease is
  // released (or the store closed) only once they have.
  const runControllers = (s: AbortSignal) =>
    Promise.all([vpsController.run(s), mkController.run(s)]).finally(() => inflight.drain());
  return { runControllers, inflight };
}

/**
 * The metrics and probe servers. A start-up that fails here (the port is taken) closes what it
 * opened, so the process exits instead of idling with a metrics server and no controllers.
 */
async function startServers(p: Parts, elector: () => LeaderElector | undefined) {
  const { cfg, store } = p;
  const metricsServer = await startMetricsServer({ registry: p.registry, ...cfg.metrics }).catch(
    async (err: unknown) => {
      await store.close();
      throw err;
    },
  );
  const probes = await startProbeServer({
    ...cfg.probes,
    ...operatorProbes({ elector, vpses: p.vpses, modelKeys: p.modelKeys }),
  }).catch(async (err: unknown) => {
    await Promise.allSettled([metricsServer.close(), store.close()]);
    throw err;
  });
  return { metricsServer, probes };
}

async function run(
  cfg: RunConfig,
  env: NodeJS.ProcessEnv,
  log: Logger,
  signal: AbortSignal,
): Promise<number> {
  const proxyBundle = readProxyBundle(env);
  const p = await openParts(cfg, env, log);
  const { runControllers, inflight } = controllersFor(p, proxyBundle);
  let elector: LeaderElector | undefined;
  let leading = !cfg.leaderElect;
  const { metricsServer, probes } = await startServers(p, () => elector);
  log.info(
    {
      version: OPERATOR_VERSION,
      metrics: `${cfg.metrics.host}:${cfg.metrics.port}`,
      probes: `${cfg.probes.host}:${cfg.probes.port}`,
    },
    'cannes-operator started',
  );

  p.vpses.start();
  p.modelKeys.start();
  let lostLease = false;
  let controllers: Promise<unknown> = Promise.resolve();
  try {
    if (cfg.leaderElect) {
      elector = new LeaderElector({
        api: p.api,
        namespace: cfg.leaseNamespace,
        name: cfg.leaseName,
        identity: cfg.identity,
        registry: p.registry,
        logger: log,
        // Returned, so the elector waits for the in-flight reconciles before releasing the lease.
        onStartedLeading: (s) => {
          leading = true;
          controllers = runControllers(s);
          return controllers;
        },
      });
      await elector.run(signal);
      lostLease = !signal.aborted;
    } else {
      await runControllers(signal);
    }
  } finally {
    log.info({ leading, lostLease }, 'cannes-operator stopping');
    // Every reconcile has seen the abort and returned before the store closes under it.
    await controllers.catch(() => {});
    await inflight.drain();
    await Promise.allSettled([p.vpses.stop(), p.modelKeys.stop()]);
    await p.events.flush();
    await Promise.allSettled([metricsServer.close(), probes.close(), p.store.close()]);
  }
  // Lost the lease: exit non-zero so the Deployment restarts us as a follower.
  return lostLease ? 1 : 0;
}
