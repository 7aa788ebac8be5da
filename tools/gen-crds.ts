// `make crds`: writes crds/*.yaml and the chart's copy from operator/api/schema.ts.
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CRD_DIRS, CRD_FILES } from '../operator/api/crds.ts';

for (const dir of CRD_DIRS) {
  mkdirSync(dir, { recursive: true });
  const wanted = new Set(CRD_FILES.map((f) => f.file));
  // A kind that was removed from the schema must not leave its CRD behind.
  for (const old of readdirSync(dir)) if (old.endsWith('.yaml') && !wanted.has(old)) rmSync(join(dir, old));
  for (const { file, text } of CRD_FILES) writeFileSync(join(dir, file), text);
}
console.log(`crds: wrote ${CRD_FILES.length} CRDs into ${CRD_DIRS.join(' and ')}`);
