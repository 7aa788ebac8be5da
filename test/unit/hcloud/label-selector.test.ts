import { describe, expect, it } from 'vitest';
import { matches, parseSelector, SelectorError, validLabels } from '../../hcloud-sim/label-selector.ts';

const labels = { 'cannes.dev/vps-uid': 'u1', env: 'prod', tier: 'web' };
const sel = (s: string, l: Record<string, string> = labels) => matches(parseSelector(s), l);

describe('label selectors (simulator)', () => {
  it('matches equality in both spellings and inequality', () => {
    expect(sel('env=prod')).toBe(true);
    expect(sel('env==prod')).toBe(true);
    expect(sel('env=dev')).toBe(false);
    expect(sel('env!=dev')).toBe(true);
    expect(sel('env!=prod')).toBe(false);
  });

  it('treats != and notin as true for objects without the label, as Kubernetes does', () => {
    expect(sel('missing!=x')).toBe(true);
    expect(sel('missing notin (a,b)')).toBe(true);
  });

  it('matches existence and absence', () => {
    expect(sel('tier')).toBe(true);
    expect(sel('!tier')).toBe(false);
    expect(sel('!missing')).toBe(true);
    expect(sel('missing')).toBe(false);
  });

  it('matches set membership with spaces inside the parentheses', () => {
    expect(sel('tier in (db, web)')).toBe(true);
    expect(sel('tier in (db)')).toBe(false);
    expect(sel('tier notin (db,web)')).toBe(false);
  });

  it('ANDs comma-separated requirements, commas inside sets included', () => {
    expect(sel('env=prod,tier in (web,db),!missing')).toBe(true);
    expect(sel('env=prod,tier in (db,api)')).toBe(false);
  });

  it('accepts prefixed keys like cannes.dev/vps-uid', () => {
    expect(sel('cannes.dev/vps-uid=u1')).toBe(true);
    expect(sel('cannes.dev/vps-uid=u2')).toBe(false);
  });

  it('rejects malformed selectors', () => {
    for (const bad of ['tier in (a', 'a=b)', '=x', 'in (a)', 'k=v v', 'k=-bad']) {
      expect(() => parseSelector(bad), bad).toThrow(SelectorError);
    }
  });

  it('validates label keys and values as Hetzner does', () => {
    expect(validLabels({ 'cannes.dev/vps-uid': 'abc-123', empty: '' })).toBeUndefined();
    expect(validLabels({ 'bad key': 'x' })).toMatch(/invalid label key/);
    expect(validLabels({ k: 'has space' })).toMatch(/invalid label value/);
    expect(validLabels({ k: 7 })).toMatch(/invalid label value/);
  });
});
