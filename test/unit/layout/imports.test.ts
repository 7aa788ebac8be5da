/**
 * Imports flow one way (docs/design.md §3, "Layers"): a folder of operator/ or proxy/ imports
 * only from folders of its own layer or below, and the folder graph has no cycle. The layers
 * below are the ones the doc lists; a new folder must be added to both.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..', '..');

/** Lowest first. A folder may import its own layer and the layers before it. */
const LAYERS: readonly (readonly string[])[] = [
  ['common'],
  ['operator/lib'],
  ['proxy', 'operator/kube', 'operator/hcloud', 'operator/ssh', 'operator/store'],
  ['operator/api', 'operator/metrics'],
  ['operator/host'],
  ['operator/controllers'],
  ['operator/adapters', 'operator/cli', 'operator/http'],
  ['operator'],
];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(REPO, dir), { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Folder → the folders its files import (relative imports only; packages are not layers). */
function folderGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const file of [...sources('common'), ...sources('operator'), ...sources('proxy')]) {
    const from = dirname(file);
    const text = readFileSync(join(REPO, file), 'utf8');
    for (const m of text.matchAll(/(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'/g)) {
      const to = dirname(normalize(relative(REPO, join(REPO, from, m[1] ?? ''))));
      if (to === from) continue;
      const set = graph.get(from) ?? new Set<string>();
      set.add(to);
      graph.set(from, set);
    }
  }
  return graph;
}

const layerOf = (folder: string) => LAYERS.findIndex((l) => l.includes(folder));

describe('the import graph', () => {
  const graph = folderGraph();

  it('puts every folder of common/, operator/ and proxy/ in a layer', () => {
    const folders = new Set([...graph.keys(), ...[...graph.values()].flatMap((s) => [...s])]);
    expect([...folders].filter((f) => layerOf(f) === -1)).toEqual([]);
  });

  it('never imports from a higher layer', () => {
    const upward: string[] = [];
    for (const [from, tos] of graph)
      for (const to of tos) if (layerOf(to) > layerOf(from)) upward.push(`${from} -> ${to}`);
    expect(upward).toEqual([]);
  });

  it('keeps the proxy and the operator apart: what both use is in common/', () => {
    const crossing: string[] = [];
    for (const [from, tos] of graph)
      for (const to of tos) {
        const a = from.split('/')[0];
        const b = to.split('/')[0];
        if (a !== b && b !== 'common') crossing.push(`${from} -> ${to}`);
      }
    expect(crossing).toEqual([]);
  });

  it('has no folder-level cycle', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...path.slice(path.indexOf(f)), f].join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const to of graph.get(f) ?? []) visit(to, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of graph.keys()) visit(f, []);
    expect(cycles).toEqual([]);
  });
});
