import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { notReadySince, OperatorMetrics } from '../../../operator/metrics/metrics.ts';

const T0 = Date.parse('2026-01-01T00:00:00Z');
const snap = (state: 'ready' | 'provisioning' | 'error', since?: Date | null) => ({
  namespace: 'team-a',
  name: 'web',
  state,
  rotationIntervalSeconds: 3600,
  ...(since === undefined ? {} : { notReadySince: since }),
});

async function notReadySeconds(registry: Registry): Promise<number | undefined> {
  const m = await registry.getSingleMetric('cannes_vps_not_ready_seconds')?.get();
  return m?.values.find((v) => v.labels['name'] === 'web')?.value;
}

describe('cannes_vps_not_ready_seconds', () => {
  it('counts from when the Vps stopped being Ready, is 0 when Ready, and goes with the Vps', async () => {
    let now = T0;
    const registry = new Registry();
    const m = new OperatorMetrics(registry, () => now);
    m.observeVps('team-a/web', snap('provisioning', new Date(T0 - 600_000)), null);
    now = T0 + 60_000;
    expect(await notReadySeconds(registry)).toBe(660);
    // A later reconcile that saw an object still saying Ready does not restart the clock.
    m.observeVps('team-a/web', snap('error', new Date(now)), null);
    expect(await notReadySeconds(registry)).toBe(660);
    m.observeVps('team-a/web', snap('ready', null), null);
    expect(await notReadySeconds(registry)).toBe(0);
    m.observeVps('team-a/web', snap('error'), null);
    now += 30_000;
    expect(await notReadySeconds(registry)).toBe(30);
    m.forgetVps('team-a/web');
    expect(await notReadySeconds(registry)).toBeUndefined();
  });

  it('takes the start from the Ready condition, else the creation, never from the future', () => {
    const now = new Date(T0);
    const created = { creationTimestamp: '2025-12-31T00:00:00Z' };
    const cond = (status: string, at: string) => ({
      conditions: [{ type: 'Ready', status, lastTransitionTime: at }],
    });
    expect(notReadySince({ metadata: created }, 'provisioning', now)).toEqual(
      new Date('2025-12-31T00:00:00Z'),
    );
    expect(
      notReadySince({ metadata: created, status: cond('False', '2025-12-31T12:00:00Z') }, 'error', now),
    ).toEqual(new Date('2025-12-31T12:00:00Z'));
    expect(
      notReadySince({ metadata: created, status: cond('True', '2025-12-31T12:00:00Z') }, 'error', now),
    ).toEqual(now);
    expect(
      notReadySince({ metadata: created, status: cond('False', '2027-01-01T00:00:00Z') }, 'error', now),
    ).toEqual(now);
    expect(notReadySince({ metadata: created }, 'ready', now)).toBeNull();
  });
});
