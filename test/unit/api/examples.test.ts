import { readdirSync, readFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { API_VERSION, ModelKeySpec, VpsSpec } from '../../../operator/api/schema.ts';

const docs = readdirSync('examples')
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) =>
    parseAllDocuments(readFileSync(`examples/${f}`, 'utf8')).map((d) => d.toJS() as Record<string, unknown>),
  );

describe('examples/', () => {
  it('hold a namespace, Secrets, a Vps and two ModelKeys', () => {
    const kinds = docs.map((d) => d['kind']);
    expect(kinds.filter((k) => k === 'Namespace')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'Secret').length).toBeGreaterThanOrEqual(1);
    expect(kinds.filter((k) => k === 'Vps')).toHaveLength(1);
    expect(kinds.filter((k) => k === 'ModelKey')).toHaveLength(2);
  });

  it('match the schema', () => {
    for (const d of docs) {
      if (d['kind'] === 'Vps' || d['kind'] === 'ModelKey') {
        expect(d['apiVersion']).toBe(API_VERSION);
        const schema = d['kind'] === 'Vps' ? VpsSpec : ModelKeySpec;
        const errors = [...Value.Errors(schema, d['spec'])].map((e) => `${e.path}: ${e.message}`);
        expect(errors, String(d['kind'])).toEqual([]);
      }
    }
  });

  it('carry only placeholders that are obviously fake', () => {
    for (const d of docs.filter((x) => x['kind'] === 'Secret')) {
      for (const v of Object.values(d['stringData'] as Record<string, string>)) expect(v).toMatch(/^FAKE-/);
    }
  });
});

describe("README's real-cluster section", () => {
  const readme = readFileSync('README.md', 'utf8');
  const section = readme.slice(readme.indexOf('## On a real cluster'), readme.indexOf('## Commands'));
  const commands = [...section.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1]!.replace(/\\\n\s*/g, '').split('\n'))
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter(Boolean);

  it('never applies a manifest client-side (that keeps Secret values in last-applied)', () => {
    const applies = commands.filter((c) => c.startsWith('kubectl apply'));
    expect(applies.length).toBeGreaterThanOrEqual(3);
    expect(applies.filter((c) => !c.includes('--server-side'))).toEqual([]);
    // The example Secrets file, with its placeholders, is not applied at all: Secrets are created.
    expect(commands.filter((c) => c.includes('10-secrets.yaml'))).toEqual([]);
  });

  it('creates every Secret the examples reference, under the names the examples use', () => {
    const created = commands
      .map((c) => /create secret generic (\S+)/.exec(c)?.[1])
      .filter((n): n is string => n !== undefined);
    const referenced = new Set<string>();
    for (const d of docs) {
      const spec = d['spec'] as Record<string, { name?: string }> | undefined;
      for (const ref of [spec?.['cloudTokenSecretRef'], spec?.['secretRef']])
        if (ref?.name) referenced.add(ref.name);
    }
    expect([...referenced].filter((n) => !created.includes(n))).toEqual([]);
  });

  it('names only example files that exist, and shows purgeSecretAfterDelivery', () => {
    for (const c of commands)
      for (const m of c.matchAll(/examples\/[\w.-]+\.yaml/g))
        expect(readdirSync('examples')).toContain(m[0].slice(9));
    expect(section).toContain('purgeSecretAfterDelivery: true');
  });
});
