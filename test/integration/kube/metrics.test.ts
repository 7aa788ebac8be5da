import { describe, expect, it } from 'vitest';
import { startMetricsServer } from '../../../operator/http/server.ts';
import { coreMetrics, createRegistry } from '../../../operator/kube/metrics.ts';
import { checkMetrics } from '../chart/prometheus.ts';

describe('the controller core metrics', () => {
  it('pass promtool check metrics, served over /metrics, with every series populated', async () => {
    const registry = createRegistry();
    const m = coreMetrics(registry);
    m.registerController('vps', 4, { inFlight: () => ({ totalSeconds: 1.5, longestSeconds: 1 }) }).add();
    m.reconcileTime.observe({ controller: 'vps' }, 0.2);
    m.leaderStatus.set({ name: 'cannes-operator' }, 1);
    m.informerWatchRestarts.inc({ resource: 'vpses.cannes.dev', reason: 'timeout' });
    m.informerRelists.inc({ resource: 'vpses.cannes.dev', reason: 'initial' });
    m.informerParseErrors.inc({ resource: 'vpses.cannes.dev' }, 0);
    m.informerSynced.set({ resource: 'vpses.cannes.dev' }, 1);
    m.informerObjects.set({ resource: 'vpses.cannes.dev' }, 3);
    m.restClientRequests.inc({ code: '200', method: 'GET', host: '127.0.0.1:6443' });
    m.eventsFailed.inc({ reason: 'ServerCreated' }, 0);
    m.statusConflicts.inc({ resource: 'vpses.cannes.dev' }, 0);
    const srv = await startMetricsServer({ registry, port: 0 });
    try {
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      expect(text).toContain('workqueue_longest_running_processor_seconds{name="vps",controller="vps"} 1');
      expect(text).not.toContain('nodejs_active_handles_total');
      expect(await checkMetrics(text)).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});
