import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

// The CI workflows, checked with actionlint (built once from its Go module by tools/actionlint.sh,
// the binary `make lint-workflows` uses); shellcheck, when installed, checks their `run:` scripts.
type Result = { code: number; out: string; stdout: string };
function exec(file: string, args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8', timeout: 600_000 }, (err, stdout, stderr) => {
      const code: unknown = err ? Reflect.get(err, 'code') : 0;
      if (typeof code !== 'number') reject(new Error(`${file} failed to run: ${err?.message}`));
      else resolve({ code, out: stdout + stderr, stdout });
    });
  });
}

const WORKFLOWS = '.github/workflows';
const files = readdirSync(WORKFLOWS)
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => join(WORKFLOWS, f));
let actionlint = '';
let dir = '';

beforeAll(async () => {
  const built = await exec('tools/actionlint.sh', []);
  if (built.code !== 0) throw new Error(`tools/actionlint.sh failed: ${built.out}`);
  // Its path is the last line of stdout (a cold build talks on stderr: go's downloads).
  actionlint = built.stdout.trim().split('\n').at(-1) ?? '';
  dir = mkdtempSync(join(tmpdir(), 'image-workflows-'));
}, 900_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('GitHub Actions workflows', () => {
  it('pass actionlint', async () => {
    expect(files).toContain('.github/workflows/release.yaml');
    const res = await exec(actionlint, ['-no-color', '-oneline', ...files]);
    expect(res.out).toBe('');
    expect(res.code).toBe(0);
  });

  it('fail actionlint when a job reads an output that does not exist (the check can fail)', async () => {
    const text = readFileSync(join(WORKFLOWS, 'release.yaml'), 'utf8');
    expect(text).toContain('needs.prepare.outputs.image');
    const broken = join(dir, 'release.yaml');
    writeFileSync(broken, text.replace('needs.prepare.outputs.image }}', 'needs.prepare.outputs.imag }}'));
    const res = await exec(actionlint, ['-no-color', '-oneline', broken]);
    expect(res.code).toBe(1);
    expect(res.out).toMatch(/property "imag" is not defined/);
  });

  it('release: on a version tag, a multi-arch image and the OCI chart, pushed, signed, with an SBOM', () => {
    type Step = { uses?: string; run?: string; with?: Record<string, unknown> };
    type Job = { steps: Step[]; permissions?: Record<string, string> };
    const wf = parse(readFileSync(join(WORKFLOWS, 'release.yaml'), 'utf8')) as {
      on: { push: { tags: string[] } };
      jobs: Record<string, Job>;
    };
    expect(wf.on.push.tags.join(' ')).toMatch(/^v\[0-9\]/);
    const { image, chart } = wf.jobs;
    const build = image!.steps.find((s) => s.uses?.startsWith('docker/build-push-action@'));
    expect(build?.with).toMatchObject({ platforms: 'linux/amd64,linux/arm64', push: true, sbom: true });
    const runs = (job: Job) => job.steps.map((s) => s.run ?? '').join('\n');
    expect(runs(image!)).toMatch(/cosign sign --yes --recursive "\$IMAGE@\$DIGEST"/);
    expect(runs(image!)).toMatch(/cosign attest .*--type spdxjson/);
    expect(runs(chart!)).toMatch(/helm push .* "oci:\/\/\$CHART_REPO"/);
    expect(runs(chart!)).toMatch(/cosign sign --yes "\$CHART_REPO\/cannes-operator@\$CHART_DIGEST"/);
    // Keyless signing needs the workflow's OIDC token.
    expect(image!.permissions?.['id-token']).toBe('write');
    expect(chart!.permissions?.['id-token']).toBe('write');
  });
});
