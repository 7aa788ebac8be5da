import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { HcloudClient } from '../../../operator/hcloud/client.ts';
import { type Simulator, startSimulator } from '../../hcloud-sim/simulator.ts';

// A small bucket refilling fast keeps the run short; the client is told the refill rate
// (Hetzner's is 1/s) and learns the limit from the RateLimit-* headers.
const LIMIT = 20;
const REFILL = 40;

describe('the client-side rate-limit budget', () => {
  let sim: Simulator | undefined;
  afterEach(async () => {
    await sim?.close();
    sim = undefined;
  });

  it('lets a burst of raw requests be refused (the simulator enforces the limit)', async () => {
    sim = await startSimulator({ rateLimit: { limit: LIMIT, refillPerSecond: REFILL } });
    const s = sim;
    const codes = await Promise.all(
      Array.from({ length: 60 }, () =>
        fetch(`${s.endpoint}/servers`, { headers: { authorization: `Bearer ${s.token.reveal()}` } }).then(
          async (r) => {
            await r.arrayBuffer();
            return r.status;
          },
        ),
      ),
    );
    expect(codes.filter((c) => c === 429).length).toBeGreaterThan(0);
    expect(s.admin.stats().refusedByBucket).toBe(codes.filter((c) => c === 429).length);
  });

  it('finishes 200 concurrent server creations without a 429 reaching the caller or the server refusing one', async () => {
    sim = await startSimulator({
      rateLimit: { limit: LIMIT, refillPerSecond: REFILL },
      actionDurationMs: 20,
    });
    const s = sim;
    let minRemaining = Number.POSITIVE_INFINITY;
    const watching: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      const rem = res.headers.get('ratelimit-remaining');
      if (rem !== null) minRemaining = Math.min(minRemaining, Number(rem));
      return res;
    };
    const registry = new Registry();
    const client = new HcloudClient({
      endpoint: s.endpoint,
      fetch: watching,
      registry,
      budget: { refillPerSecond: REFILL },
      retry: { baseMs: 10, capMs: 100 },
    });
    const results = await Promise.allSettled(
      Array.from({ length: 200 }, (_, i) =>
        client.createServer(s.token, {
          name: `burst-${i}`,
          server_type: 'cx23',
          image: 'ubuntu-24.04',
          start_after_create: false,
        }),
      ),
    );
    const rejected = results.filter((r) => r.status === 'rejected');
    expect(rejected).toEqual([]);
    expect(s.admin.stats().refusedByBucket).toBe(0);
    expect(s.requests.filter((r) => r.method === 'POST' && r.route === '/servers')).toHaveLength(200);
    expect(s.requests.some((r) => r.status === 429)).toBe(false);
    // It did run the bucket low and made requests wait for the refill: not trivially easy.
    expect(minRemaining).toBeLessThan(LIMIT / 2);
    const waited = /cannes_hcloud_budget_wait_seconds_sum ([\d.e+-]+)/.exec(
      await registry.getSingleMetricAsString('cannes_hcloud_budget_wait_seconds'),
    );
    expect(Number(waited?.[1])).toBeGreaterThan(0);
  });

  it('keeps every caller whole when another tool drains the same project meanwhile', async () => {
    sim = await startSimulator({ rateLimit: { limit: LIMIT, refillPerSecond: REFILL } });
    const s = sim;
    const client = new HcloudClient({
      endpoint: s.endpoint,
      budget: { refillPerSecond: REFILL },
      retry: { baseMs: 20, capMs: 200, maxRetries: 8 },
    });
    await client.listServers(s.token);
    // Another tool with the same token spends the bucket behind the client's back.
    const other = Array.from({ length: 25 }, () =>
      fetch(`${s.endpoint}/servers`, { headers: { authorization: `Bearer ${s.token.reveal()}` } }).then((r) =>
        r.arrayBuffer(),
      ),
    );
    const mine = Array.from({ length: 40 }, () => client.listServers(s.token));
    const settled = await Promise.allSettled([...mine]);
    await Promise.all(other);
    expect(settled.filter((r) => r.status === 'rejected')).toEqual([]);
  });
});
