import { describe, expect, it } from 'vitest';
import { startMetricsServer, startProbeServer } from '../../../operator/http/server.ts';
import { coreMetrics, createRegistry } from '../../../operator/kube/metrics.ts';

describe('HTTP surfaces', () => {
  it('serves Prometheus text on /metrics and 404 elsewhere', async () => {
    const registry = createRegistry();
    coreMetrics(registry).registerController('vps', 2, {
      inFlight: () => ({ totalSeconds: 0, longestSeconds: 0 }),
    });
    const srv = await startMetricsServer({ registry, port: 0 });
    try {
      const res = await fetch(`${srv.url}/metrics`);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toContain('controller_runtime_reconcile_total{controller="vps",result="requeue_after"} 0');
      expect(text).toContain('workqueue_unfinished_work_seconds{name="vps",controller="vps"} 0');
      expect(text).toContain('process_resident_memory_bytes');
      expect((await fetch(`${srv.url}/other`)).status).toBe(404);
    } finally {
      await srv.close();
    }
  });

  it('answers /readyz 500 naming the failing check until it passes', async () => {
    let synced = false;
    const srv = await startProbeServer({
      port: 0,
      healthz: [{ name: 'ping', check: () => true }],
      readyz: [{ name: 'informer-vps', check: () => synced }],
    });
    try {
      const before = await fetch(`${srv.url}/readyz`);
      expect(before.status).toBe(500);
      expect(await before.text()).toContain('[-]informer-vps failed');
      expect((await fetch(`${srv.url}/healthz`)).status).toBe(200);
      synced = true;
      const after = await fetch(`${srv.url}/readyz`);
      expect(after.status).toBe(200);
      expect(await after.text()).toBe('ok');
    } finally {
      await srv.close();
    }
  });
});
