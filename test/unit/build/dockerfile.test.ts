import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { IMAGE_JEMALLOC, OPERATOR_RUNTIME_ENV } from '../../../operator/config.ts';

// The assumptions the Dockerfile makes about the repository, checked without building it.
// `make image` builds it with buildah and test/integration/build/image.test.ts runs the result.
const dockerfile = readFileSync('Dockerfile', 'utf8');
const lines = dockerfile.split('\n').filter((l) => !l.trimStart().startsWith('#'));
const stages = dockerfile.split(/^FROM /m).slice(1);
const runtime = stages.at(-1) ?? '';

describe('Dockerfile', () => {
  it('copies only files that exist in the repository', () => {
    const copies = lines.filter((l) => l.startsWith('COPY ') && !l.includes('--from='));
    expect(copies.length).toBeGreaterThan(0);
    for (const l of copies) {
      const parts = l.split(/\s+/).slice(1, -1);
      for (const src of parts) expect(existsSync(src), `${l}: ${src}`).toBe(true);
    }
  });

  it('starts the entry point the build produces', () => {
    const entry = /ENTRYPOINT \["node", "([^"]+)"\]/.exec(runtime)?.[1];
    expect(entry).toBe('dist/operator/main.js');
    const build = JSON.parse(readFileSync('tsconfig.build.json', 'utf8')) as {
      compilerOptions: { outDir: string };
    };
    expect(build.compilerOptions.outDir).toBe('dist');
    expect(existsSync('operator/main.ts')).toBe(true);
    expect(existsSync('dist/operator/main.js'), 'run `make build` first').toBe(true);
  });

  it('runs as a non-root user on a Node 24 slim runtime without dev dependencies or sources', () => {
    expect(runtime).toMatch(/^node:24-bookworm-slim/);
    const user = /^USER (\d+)/m.exec(runtime)?.[1];
    expect(Number(user)).toBeGreaterThan(0);
    expect(dockerfile).toContain('npm ci --omit=dev');
    expect(runtime).not.toMatch(/COPY (operator|proxy|test|tools)\b/);
    expect(runtime).not.toContain('HEALTHCHECK');
  });

  it('compiles once on the builder’s platform and installs production dependencies without scripts', () => {
    expect(stages[0]).toMatch(/^--platform=\$BUILDPLATFORM node:24-bookworm-slim AS build$/m);
    const deps = stages.find((s) => / AS deps$/m.test(s)) ?? '';
    expect(deps).not.toContain('$BUILDPLATFORM'); // its node_modules are the target platform's
    expect(deps).toMatch(/npm ci --omit=dev .*--ignore-scripts/);
  });

  it('ships package.json next to dist/, where --version reads the version (operator/version.ts)', () => {
    expect(runtime).toMatch(/^COPY package\.json \.\/$/m);
    expect(runtime).toMatch(/^WORKDIR \/app$/m);
    expect(runtime).toMatch(/^COPY --from=build \/src\/dist \.\/dist$/m);
  });

  it('runs the operator with the runtime environment the rig measures (OPERATOR_RUNTIME_ENV)', () => {
    const env = runtime
      .split('\n')
      .filter((l) => l.startsWith('ENV '))
      .flatMap((l) => l.slice(4).trim().split(/\s+/));
    for (const [k, v] of Object.entries(OPERATOR_RUNTIME_ENV)) expect(env, k).toContain(`${k}=${v}`);
  });

  it('allocates with jemalloc: Debian’s libjemalloc2, linked where LD_PRELOAD names it', () => {
    // One RUN, before USER: the package, the apt lists removed, the platform's library linked.
    const install = /^RUN apt-get update \\\n(?: && .*\\\n)* && .*$/m.exec(runtime)?.[0] ?? '';
    expect(install).toContain('apt-get install -y --no-install-recommends libjemalloc2');
    expect(install).toContain('rm -rf /var/lib/apt/lists/*');
    expect(install).toContain(`ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" ${IMAGE_JEMALLOC}`);
    expect(install).toContain(`test -e ${IMAGE_JEMALLOC}`);
    expect(runtime).toMatch(new RegExp(`^ENV LD_PRELOAD=${IMAGE_JEMALLOC.replaceAll('.', '\\.')}$`, 'm'));
    expect(runtime.indexOf(install)).toBeLessThan(runtime.search(/^USER /m));
  });
});
