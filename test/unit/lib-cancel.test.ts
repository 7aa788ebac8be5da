import { describe, expect, it } from 'vitest';
import { Secret } from '../../common/secret.ts';
import { HcloudClient } from '../../operator/hcloud/client.ts';
import { withCancel } from '../../operator/lib/cancel.ts';

/** A reconcile's cancellation reaches the calls made on its behalf (operator/lib/cancel.ts). */
describe('a cancelled reconcile', () => {
  it('aborts its Hetzner request in flight', async () => {
    let seen: AbortSignal | undefined;
    const client = new HcloudClient({
      endpoint: 'http://127.0.0.1:9/v1',
      fetch: (_url, init) =>
        new Promise((_resolve, reject) => {
          seen = init?.signal ?? undefined;
          seen?.addEventListener('abort', () => reject(seen?.reason), { once: true });
        }),
    } as ConstructorParameters<typeof HcloudClient>[0]);
    const stop = new AbortController();
    const call = withCancel(stop.signal, () => client.getServer(Secret.of('a'.repeat(64)), 1));
    await new Promise((r) => setTimeout(r, 50));
    expect(seen?.aborted).toBe(false);
    stop.abort();
    await expect(call).rejects.toBeDefined();
    expect(seen?.aborted).toBe(true);
  });

  it('is not cancelled outside a reconcile', async () => {
    const { cancelSignal } = await import('../../operator/lib/cancel.ts');
    expect(cancelSignal()).toBeUndefined();
    const stop = new AbortController();
    await withCancel(stop.signal, async () => expect(cancelSignal()).toBe(stop.signal));
  });
});
