/**
 * `cannes-operator run`: connects the pieces. Order matters at start-up: the configuration
 * and the keyring are checked before anything connects (a bad master key refuses to start
 * without touching the database), then Postgres is migrated, then the informers start (on
 * every replica, for a fast failover), then the controllers run on the leader only.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
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
import { Controller, done } from './kube/controller.ts';
import { EventRecorder } from './kube/events.ts';
import { Informer } from './kube/informer.ts';
import { LeaderElector } from './kube/leader.ts';
import { createRegistry } from './kube/metrics.ts';
import { objectKey } from './kube/object.ts';
import { parseGoDuration } from './lib/duration.ts';
import { createLogger, type Logger } from './lib/log.ts';
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

async function run(
  cfg: RunConfig,
  env: NodeJS.ProcessEnv,
  log: Logger,
  signal: AbortSignal,
): Promise<number> {
  const proxyBundle = readProxyBundle(env);
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
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const api = new KubeClient(kc, { registry });
  const events = new EventRecorder({ api, reportingInstance: cfg.identity, registry, logger: log });
  const vpses = new Informer<VpsObject>({
    api,
    resource: VPS_RESOURCE,
    ...(cfg.watchNamespace === undefined ? {} : { namespace: cfg.watchNamespace }),
    parse: parseVps,
    registry,
    logger: log,
    resyncMs: cfg.resyncMs,
  });
  const modelKeys = new Informer<ModelKeyObject>({
    api,
    resource: MODELKEY_RESOURCE,
    ...(cfg.watchNamespace === undefined ? {} : { namespace: cfg.watchNamespace }),
    parse: parseModelKey,
    registry,
    logger: log,
    resyncMs: cfg.resyncMs,
  });
  const kube = new KubePort({ api, events, vpses, modelKeys });
  const storePort = controllerStore(store);
  const hcloud = new HcloudPort(new HcloudClient({ endpoint: cfg.hcloudEndpoint, registry }));
  const remote = new RemotePort({
    rotationStore: rotationStore(store),
    connect: { onAttempt: (auth) => ours.sshConnections.inc({ auth }) },
    ...(cfg.sshPort === undefined ? {} : { port: cfg.sshPort }),
  });
  const bundleOpts = {
    proxyBundle,
    providerOrigins: cfg.providerOrigins,
    ...(cfg.nodeDistUrl === undefined ? {} : { nodeDistUrl: cfg.nodeDistUrl }),
    nodeSha256: cfg.nodeSha256,
  };
  // Long steps run off the workers; their end re-enqueues the Vps (vpsController, below).
  const inflight = new InFlight((key) => vpsController.enqueue(key.split('#')[0] ?? ''), cfg.maxInFlight);
  const vpsDeps = {
    inflight,
    kube,
    hcloud,
    remote,
    store: storePort,
    bundle: makeBundle(bundleOpts),
    bundleVersion: bundleVersion(bundleOpts),
    hardening: hardeningBundle,
    now: () => new Date(),
    log,
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

  const vpsController = new Controller<VpsObject>({
    name: 'vps',
    informer: vpses,
    workers: cfg.workers,
    registry,
    logger: log,
    reconcile: async ({ key }, { signal }) => {
      const vps = vpses.get(key);
      if (!vps) {
        ours.forgetVps(key);
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
      return mk ? reconcileModelKey(mk, { kube, now: () => new Date() }) : done();
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

  let elector: LeaderElector | undefined;
  let leading = !cfg.leaderElect;
  const metricsServer = await startMetricsServer({ registry, ...cfg.metrics }).catch(async (err: unknown) => {
    await store.close();
    throw err;
  });
  // A start-up that fails here (the port is taken) closes what it opened, so the process
  // exits instead of idling with a metrics server and no controllers.
  const probes = await startProbeServer({
    ...cfg.probes,
    ...operatorProbes({ elector: () => elector, vpses, modelKeys }),
  }).catch(async (err: unknown) => {
    await Promise.allSettled([metricsServer.close(), store.close()]);
    throw err;
  });
  log.info(
    {
      version: OPERATOR_VERSION,
      metrics: `${cfg.metrics.host}:${cfg.metrics.port}`,
      probes: `${cfg.probes.host}:${cfg.probes.port}`,
    },
    'cannes-operator started',
  );

  vpses.start();
  modelKeys.start();
  // Steps in flight were started under the same signal: they stop with it, and the lease is
  // released (or the store closed) only once they have.
  const runControllers = (s: AbortSignal) =>
    Promise.all([vpsController.run(s), mkController.run(s)]).finally(() => inflight.drain());
  let lostLease = false;
  let controllers: Promise<unknown> = Promise.resolve();
  try {
    if (cfg.leaderElect) {
      elector = new LeaderElector({
        api,
        namespace: cfg.leaseNamespace,
        name: cfg.leaseName,
        identity: cfg.identity,
        registry,
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
    await Promise.allSettled([vpses.stop(), modelKeys.stop()]);
    await events.flush();
    await Promise.allSettled([metricsServer.close(), probes.close(), store.close()]);
  }
  // Lost the lease: exit non-zero so the Deployment restarts us as a follower.
  return lostLease ? 1 : 0;
}
