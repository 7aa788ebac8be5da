import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Secret } from '../../common/secret.ts';

describe('Secret', () => {
  const canary = `canary-${crypto.randomUUID()}`;
  const s = Secret.of(canary);

  it('never prints its value through string, JSON, inspect or template paths', () => {
    expect(String(s)).not.toContain(canary);
    expect(`${s}`).not.toContain(canary);
    expect(JSON.stringify({ s })).not.toContain(canary);
    expect(inspect({ nested: { s } }, { depth: 10 })).not.toContain(canary);
    expect(`${s as unknown as string}`).toBe('[redacted]');
  });

  it('reveals the value only on request', () => {
    expect(s.reveal()).toBe(canary);
    expect(s.length).toBe(canary.length);
  });

  it('compares in constant time', () => {
    expect(s.equals(Secret.of(canary))).toBe(true);
    expect(s.equals(Secret.of(`${canary}x`))).toBe(false);
    expect(s.equals(Secret.of(canary.replace('c', 'd')))).toBe(false);
  });
});
