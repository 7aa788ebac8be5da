import { describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { BudgetRegistry, TokenBudget, tokenId } from '../../../operator/hcloud/budget.ts';

/** A fake clock: sleeping advances it, so nothing here waits for real time. */
function clock() {
  let t = 1_000_000;
  const sleeps: number[] = [];
  return {
    now: () => t,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      t += ms;
      // Yield to the event loop so a waiter that keeps sleeping cannot starve the test.
      await new Promise((r) => setImmediate(r));
    },
    advance: (ms: number) => {
      t += ms;
    },
    sleeps,
  };
}

describe('TokenBudget', () => {
  it('sends one probe at a time until the server has told it the numbers', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now });
    await b.acquire(c.sleep);
    let second = false;
    const p = b.acquire(c.sleep).then(() => {
      second = true;
    });
    await new Promise((r) => setTimeout(r, 5));
    expect(second).toBe(false);
    b.settle({ limit: 3600, remaining: 3599 });
    await p;
    expect(second).toBe(true);
  });

  it('waits for the refill instead of spending the last token of the bucket', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 10, refillPerSecond: 2, reserveFraction: 0 });
    await b.acquire(c.sleep);
    b.settle({ limit: 10, remaining: 9 });
    for (let i = 0; i < 8; i++) {
      await b.acquire(c.sleep);
      b.settle({});
    }
    expect(c.sleeps).toEqual([]);
    // One token left: that one is the reserve, so the next request waits half a second.
    await b.acquire(c.sleep);
    expect(c.sleeps.reduce((a, x) => a + x, 0)).toBeGreaterThanOrEqual(500);
  });

  it('spaces a queued burst at the refill rate, first come first served', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 5, refillPerSecond: 1, reserveFraction: 0 });
    await b.acquire(c.sleep);
    b.settle({ limit: 5, remaining: 4 });
    const sent: number[] = [];
    await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        b.acquire(c.sleep).then(() => {
          sent.push(i);
          b.settle({});
        }),
      ),
    );
    expect(sent).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // 4 tokens, minus the reserve of 1, cover 3; the other 5 wait a second each.
    expect(c.sleeps.reduce((a, x) => a + x, 0)).toBeGreaterThanOrEqual(5000);
  });

  it('believes the server when it reports fewer tokens than the model holds', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 3600, refillPerSecond: 1 });
    await b.acquire(c.sleep);
    b.settle({ limit: 3600, remaining: 3 });
    expect(b.tokens).toBe(3);
    b.settle({ remaining: 3000 });
    expect(b.tokens).toBe(3);
  });

  it('counts requests still in flight against what the server reported', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 100, refillPerSecond: 1, reserveFraction: 0 });
    await b.acquire(c.sleep);
    b.settle({ limit: 100, remaining: 99 });
    await b.acquire(c.sleep);
    await b.acquire(c.sleep);
    // The first answer says 50 left; the other request may not have been counted yet.
    b.settle({ remaining: 50 });
    expect(b.tokens).toBe(49);
  });

  it('does not count refill for requests the server has not received yet', async () => {
    // The server takes a token when a request ARRIVES; while requests are still on their way
    // its bucket may sit full and lose refill. Time alone must not free tokens past the cap.
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 5, refillPerSecond: 10, reserveFraction: 0 });
    await b.acquire(c.sleep);
    b.settle({ limit: 5, remaining: 4 });
    for (let i = 0; i < 3; i++) await b.acquire(c.sleep);
    c.advance(60_000);
    // Full bucket (5) minus 3 in flight leaves 2: one more may go, keeping the reserve of 1.
    await b.acquire(c.sleep);
    let fifth = false;
    const p = b.acquire(c.sleep).then(() => {
      fifth = true;
    });
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(fifth).toBe(false);
    b.settle({ remaining: 3 });
    await p;
    expect(fifth).toBe(true);
  });

  it('adopts the limit the server announces', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now });
    await b.acquire(c.sleep);
    b.settle({ limit: 20, remaining: 19 });
    expect(b.limit).toBe(20);
    expect(b.tokens).toBe(19);
  });

  it('drops to an empty bucket on a 429 without headers', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 100 });
    await b.acquire(c.sleep);
    b.settle({ refused: true });
    expect(b.tokens).toBeLessThanOrEqual(0);
  });
});

describe('BudgetRegistry', () => {
  it('keeps one budget per token, keyed by a hash that is not the token', () => {
    const reg = new BudgetRegistry();
    const a = new Secret('a'.repeat(64));
    const b = new Secret('b'.repeat(64));
    expect(reg.for(a).budget).toBe(reg.for(new Secret('a'.repeat(64))).budget);
    expect(reg.for(a).budget).not.toBe(reg.for(b).budget);
    expect(tokenId(a)).toMatch(/^[0-9a-f]{16}$/);
    expect(tokenId(a)).not.toContain('aaaa');
  });
});

describe('TokenBudget and RateLimit-Reset', () => {
  it('slows its refill to what the server reports when that is slower than configured', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 3600, refillPerSecond: 1 });
    await b.acquire(c.sleep);
    // 1000 tokens missing, full again in 2000 s: the server refills at 0.5/s.
    b.settle({ limit: 3600, remaining: 2600, reset: c.now() / 1000 + 2000 });
    expect(b.refillPerSecond).toBeCloseTo(0.5, 5);
  });

  it('never goes faster than configured, and ignores a reset too close to judge', async () => {
    const c = clock();
    const b = new TokenBudget({ now: c.now, limit: 3600, refillPerSecond: 1 });
    await b.acquire(c.sleep);
    b.settle({ limit: 3600, remaining: 2600, reset: c.now() / 1000 + 100 });
    expect(b.refillPerSecond).toBe(1);
    await b.acquire(c.sleep);
    b.settle({ limit: 3600, remaining: 3595, reset: c.now() / 1000 + 2 });
    expect(b.refillPerSecond).toBe(1);
  });
});
