/**
 * Where a V8 heap snapshot's bytes are: self size summed by node type and constructor name,
 * largest first (`node tools/heap-summary.ts <file.heapsnapshot> [top]`). For the operator
 * benchmark's memory (BENCH_HEAP_SNAPSHOT=1 in bench/operator.bench.ts; docs/robustness.md).
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] }; node_count: number };
  nodes: number[];
  strings: string[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node tools/heap-summary.ts <file.heapsnapshot> [top]');
  process.exit(2);
}
const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
const fields = snap.snapshot.meta.node_fields;
const width = fields.length;
const at = (f: string) => fields.indexOf(f);
const [typeAt, nameAt, sizeAt] = [at('type'), at('name'), at('self_size')];
const types = snap.snapshot.meta.node_types[0];
const sums = new Map<string, { bytes: number; count: number }>();
let total = 0;
for (let i = 0; i < snap.nodes.length; i += width) {
  const type = types[snap.nodes[i + typeAt] ?? 0] ?? '?';
  const rawName = snap.strings[snap.nodes[i + nameAt] ?? 0] ?? '';
  const name =
    type === 'string' || type === 'concatenated string' || type === 'sliced string'
      ? ''
      : rawName.slice(0, 60);
  const size = snap.nodes[i + sizeAt] ?? 0;
  total += size;
  const key = `${type} ${name}`;
  const e = sums.get(key) ?? { bytes: 0, count: 0 };
  e.bytes += size;
  e.count++;
  sums.set(key, e);
}
const top = [...sums].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, Number(topArg ?? 30));
console.log(`total self size ${(total / 2 ** 20).toFixed(1)} MiB in ${snap.nodes.length / width} nodes`);
for (const [k, v] of top)
  console.log(`${(v.bytes / 2 ** 20).toFixed(2).padStart(8)} MiB ${String(v.count).padStart(8)}  ${k}`);
