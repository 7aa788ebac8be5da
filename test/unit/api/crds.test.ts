import { existsSync, readFileSync } from 'node:fs';
import type { TSchema } from '@sinclair/typebox';
import { describe, expect, it } from 'vitest';
import { CRD_FILES, crdFor, staleCrdFiles } from '../../../operator/api/crds.ts';
import { KINDS, MODEL_KEY, VPS } from '../../../operator/api/schema.ts';

const readRepoFile = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : undefined);

type Node = { [k: string]: unknown };
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every schema node below a root, with its path. */
function* walk(schema: unknown, path: string): Generator<[string, Node]> {
  if (!isNode(schema)) return;
  yield [path, schema];
  if (isNode(schema['properties'])) {
    for (const [k, v] of Object.entries(schema['properties'])) yield* walk(v, `${path}.${k}`);
  }
  if (schema['items'] !== undefined) yield* walk(schema['items'], `${path}[]`);
}

describe('generated CRDs', () => {
  it('are up to date with operator/api/schema.ts (run `make crds`)', () => {
    expect(staleCrdFiles(readRepoFile)).toEqual([]);
  });

  it('catches a hand edit of a generated file', () => {
    const first = CRD_FILES[0]!;
    const edited = (p: string) => {
      const text = readRepoFile(p);
      return p.endsWith(first.file) && text ? text.replace('type: boolean', 'type: string') : text;
    };
    expect(staleCrdFiles(edited)).toEqual([
      `crds/${first.file}`,
      `charts/cannes-operator/crds/${first.file}`,
    ]);
  });

  it('has a description on every field, so `kubectl explain` is useful', () => {
    for (const k of KINDS) {
      for (const [root, schema] of [
        ['spec', k.spec],
        ['status', k.status],
      ] as const) {
        for (const [path, node] of walk(JSON.parse(JSON.stringify(schema)), `${k.kind}.${root}`)) {
          expect(typeof node['description'], `${path} has no description`).toBe('string');
        }
      }
    }
  });

  it('allows only booleans in status besides observedGeneration and conditions', () => {
    for (const k of KINDS) {
      const props = (JSON.parse(JSON.stringify(k.status)) as Node)['properties'];
      expect(isNode(props)).toBe(true);
      for (const [name, v] of Object.entries(props as Node)) {
        if (name === 'observedGeneration' || name === 'conditions') continue;
        expect((v as Node)['type'], `${k.kind}.status.${name}`).toBe('boolean');
      }
    }
  });

  it('keys conditions by type as a list map and serves the status subresource', () => {
    for (const k of KINDS) {
      const crd = JSON.parse(JSON.stringify(crdFor(k)));
      const version = crd.spec.versions[0];
      expect(version.subresources).toEqual({ status: {} });
      const cond = version.schema.openAPIV3Schema.properties.status.properties.conditions;
      expect(cond['x-kubernetes-list-type']).toBe('map');
      expect(cond['x-kubernetes-list-map-keys']).toEqual(['type']);
    }
  });

  it('prints Ready, HasSshKey, Gateway, IPv4 (from the annotation), the Ready reason and Age for a Vps', () => {
    expect(VPS.printerColumns.map((c) => c.name)).toEqual([
      'Ready',
      'HasSshKey',
      'Gateway',
      'IPv4',
      'Status',
      'Age',
    ]);
    expect(VPS.printerColumns.find((c) => c.name === 'IPv4')?.jsonPath).toContain('cannes\\.dev/ipv4');
  });

  it("prints the Ready condition's reason as Status for both kinds, as cert-manager does", () => {
    for (const k of [VPS, MODEL_KEY])
      expect(k.printerColumns.find((c) => c.name === 'Status')?.jsonPath).toBe(
        '.status.conditions[?(@.type=="Ready")].reason',
      );
  });

  it('requires baseUrl exactly when a ModelKey provider is custom (CEL)', () => {
    const rules = (MODEL_KEY.spec as TSchema)['x-kubernetes-validations'] as { rule: string }[];
    expect(rules.map((r) => r.rule)).toContain("has(self.baseUrl) == (self.provider == 'custom')");
  });
});
