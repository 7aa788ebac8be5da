// Entry point of the host-side LLM proxy (bundled to dist/proxy/cannes-proxy.mjs).
import { createServer } from 'node:http';
import { isMainThread, workerData } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { CannesError } from '../common/errors.ts';
import { parseArgs, USAGE } from './cli.ts';
import { directStatusCommand, intakeCommand } from './intake-main.ts';
import { KeyFileWatcher } from './keyfile-watch.ts';
import { createLogger } from './log.ts';
import { ProxyMetrics } from './metrics.ts';
import { Allowlist, BridgeAllowlist, findBridgeAddresses, type HostPort, type SourceCheck } from './net.ts';
import { ProxyServer } from './server.ts';
import { ProxyThreads, runThread, type ServerLimits, type ThreadConfig, toWire } from './threads.ts';

function fail(message: string): never {
  process.stderr.write(`cannes-proxy: ${message}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  let args: ReturnType<typeof parseArgs>;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    fail(err instanceof CannesError ? err.message : 'invalid arguments');
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return;
  }
  const logger = createLogger({ level: args.logLevel });
  let outer: Allowlist;
  try {
    outer = new Allowlist(args.allow);
  } catch (err) {
    fail(err instanceof CannesError ? err.message : 'invalid --allow');
  }
  const bridges = args.bridgesOnly ? new BridgeAllowlist(outer) : undefined;
  const allow: SourceCheck = bridges ?? outer;
  if (bridges)
    logger.info('sources: the Docker bridges present, within --allow', { subnets: bridges.subnets });

  let listen: readonly HostPort[] = args.listen;
  if (listen.length === 0) {
    const found = findBridgeAddresses();
    if (found.length === 0) {
      fail(
        'no Docker bridge address found (docker0, br-*): give --listen HOST:PORT; never listening on 0.0.0.0',
      );
    }
    listen = found.map((b) => ({ host: b.address, port: args.port }));
    for (const b of found) {
      if (!outer.allows(b.address, 'IPv4')) {
        logger.warn('bridge address outside the allowed source ranges', {
          iface: b.iface,
          address: b.address,
        });
      }
    }
  }

  const registry = new Registry();
  const metrics = new ProxyMetrics(registry);
  const limits: ServerLimits = {
    maxBodyBytes: args.maxBodyBytes,
    upstreamHeadersTimeoutMs: args.upstreamHeadersTimeoutMs,
    upstreamBodyTimeoutMs: args.upstreamBodyTimeoutMs,
    upstreamConnectTimeoutMs: args.upstreamConnectTimeoutMs,
    clientHeadersTimeoutMs: args.clientHeadersTimeoutMs,
    clientRequestTimeoutMs: args.clientRequestTimeoutMs,
    endpoints: { anyPath: args.allowAnyPath, extraPrefixes: args.allowPathPrefixes },
  };
  const multi = args.threads > 1;
  const proxy = new ProxyServer({
    ...limits,
    listen,
    allow,
    logger,
    metrics,
    ...(multi ? { reusePort: true, thread: 0 } : {}),
  });
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  let threads: ProxyThreads | null = null;
  const watcher = new KeyFileWatcher({
    path: args.keys,
    directPath: args.directKeys,
    uid,
    logger,
    metrics,
    onRoutes: (r, missing) => {
      proxy.setRoutes(r, missing);
      threads?.setRoutes(r, missing);
    },
  });
  try {
    watcher.loadInitial();
  } catch (err) {
    // Messages of key file errors never quote the file.
    fail(err instanceof CannesError ? err.message : 'the key file could not be read');
  }

  let bound: Awaited<ReturnType<ProxyServer['listen']>>;
  try {
    bound = await proxy.listen();
  } catch (err) {
    const code = err instanceof Error && 'code' in err ? String(err.code) : 'unknown';
    fail(`cannot listen on ${listen.map((l) => `${l.host}:${l.port}`).join(', ')} (${code})`);
  }
  if (multi) {
    // The other threads bind what this one bound (a port 0 is resolved by now).
    const started = proxy.routes;
    const configs: ThreadConfig[] = [];
    for (let thread = 1; thread < args.threads; thread++) {
      configs.push({
        thread,
        listen: bound.map((a) => ({ host: a.address, port: a.port })),
        allow: args.allow,
        bridgesOnly: args.bridgesOnly,
        logLevel: args.logLevel,
        limits,
        routes: toWire(started),
        keyFileMissing: proxy.keyFileMissing,
      });
    }
    try {
      threads = await ProxyThreads.start(new URL(import.meta.url), configs, logger, (message) => {
        logger.error('a proxy thread failed; exiting so that systemd starts a new proxy', { message });
        process.exit(1);
      });
    } catch (err) {
      fail(`cannot start ${args.threads} threads: ${err instanceof Error ? err.message : 'unknown error'}`);
    }
    // A reload while the workers started reaches them too.
    if (proxy.routes !== started) threads.setRoutes(proxy.routes, proxy.keyFileMissing);
  }
  for (const a of bound)
    logger.info('listening', { address: a.address, port: a.port, threads: args.threads });
  if (args.allowAnyPath || args.allowPathPrefixes.length > 0) {
    logger.warn('the endpoint allow list is widened', {
      anyPath: args.allowAnyPath,
      prefixes: args.allowPathPrefixes,
    });
  }

  let metricsServer: ReturnType<typeof createServer> | null = null;
  if (args.metrics) {
    const m = args.metrics;
    metricsServer = createServer(async (req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
        if (threads) metrics.setRemote(await threads.snapshots());
        const text = await registry.metrics();
        res.writeHead(200, { 'content-type': registry.contentType });
        res.end(text);
      } else if (req.method === 'GET' && req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    try {
      await new Promise<void>((resolve, reject) => {
        metricsServer!.once('error', reject);
        metricsServer!.listen({ host: m.host, port: m.port, exclusive: true }, () => resolve());
      });
      const a = metricsServer.address();
      if (a && typeof a === 'object') logger.info('metrics listening', { address: a.address, port: a.port });
    } catch (err) {
      const code = err instanceof Error && 'code' in err ? String(err.code) : 'unknown';
      fail(`cannot listen for metrics on ${m.host}:${m.port} (${code})`);
    }
  }

  if (args.watchKeyFile) watcher.start();
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading the key file');
    watcher.reload('signal');
  });
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping: no new connections, letting open streams finish', {
      signal,
      active: proxy.activeRequests,
      deadlineMs: args.drainTimeoutMs,
    });
    watcher.stop();
    await Promise.all([proxy.close(args.drainTimeoutMs), threads?.drain(args.drainTimeoutMs)]);
    metricsServer?.close();
    metricsServer?.closeAllConnections();
    logger.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

async function command(): Promise<void> {
  const [sub, ...rest] = process.argv.slice(2);
  try {
    if (sub === 'intake') return await intakeCommand(rest);
    if (sub === 'direct-status') return directStatusCommand(rest);
  } catch (err) {
    fail(err instanceof CannesError ? err.message : 'failed');
  }
  await main();
}

if (isMainThread) await command();
else await runThread(workerData as ThreadConfig);
