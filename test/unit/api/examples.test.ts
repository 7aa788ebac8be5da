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
