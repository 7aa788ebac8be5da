/**
 * The `helm test` script (charts/cannes-operator/files/helm-test.mjs), run as the test pod runs
 * it (`node --input-type=module -e <script>`) against a real HTTP metrics endpoint and a fake
 * Lease endpoint on loopback.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SCRIPT = readFileSync('charts/cannes-operator/files/helm-test.mjs', 'utf8');
const TOKEN = `fake-token-${Math.random().toString(36).slice(2)}`;

let metricsBody = '';
let lease: { status: number; body?: unknown } = { status: 404 };
let seenAuth: string | undefined;
let seenPath: string | undefined;
const servers: Server[] = [];
let metricsUrl = '';
let apiUrl = '';
let dir = '';

async function listen(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-helm-test-'));
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  metricsUrl = `${await listen((_req, res) => res.end(metricsBody))}/metrics`;
  apiUrl = await listen((req, res) => {
    seenAuth = req.headers.authorization;
    seenPath = req.url;
    res.statusCode = lease.status;
    res.end(JSON.stringify(lease.body ?? {}));
  });
});
afterAll(() => {
  for (const s of servers) s.close();
  rmSync(dir, { recursive: true, force: true });
});

function runScript(env: Record<string, string> = {}): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', SCRIPT], {
      env: {
        PATH: process.env['PATH'] ?? '',
        METRICS_URL: metricsUrl,
        API_URL: apiUrl,
        TOKEN_FILE: join(dir, 'token'),
        LEASE_NAMESPACE: 'cannes-system',
        LEASE_NAME: 'cannes-operator',
        ...env,
      },
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    child.on('close', (code) => resolve({ code, out }));
  });
}

const SYNCED = 'cannes_informer_synced{resource="vpses"} 1\n';
const fresh = () => ({
  status: 200,
  body: {
    spec: {
      holderIdentity: 'cannes-operator-abc_1234',
      leaseDurationSeconds: 15,
      renewTime: new Date().toISOString(),
    },
  },
});

describe('the helm test script', () => {
  it('passes when /metrics answers with the operator series and the Lease is held and renewed', async () => {
    metricsBody = SYNCED;
    lease = fresh();
    const res = await runScript();
    expect(res.out).toContain('ok   the operator answers');
    expect(res.out).toContain('ok   cannes-operator-abc_1234 leads');
    expect(res.code).toBe(0);
    expect(seenAuth).toBe(`Bearer ${TOKEN}`);
    expect(seenPath).toBe('/apis/coordination.k8s.io/v1/namespaces/cannes-system/leases/cannes-operator');
    expect(res.out).not.toContain(TOKEN);
  });

  it('fails when the metrics are not the operator', async () => {
    metricsBody = 'up 1\n';
    lease = fresh();
    const res = await runScript();
    expect(res.code).toBe(1);
    expect(res.out).toMatch(/FAIL .*no cannes_informer_synced series/);
  });

  it('fails when nothing answers', async () => {
    // A port that was just free: nothing listens there.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const res = await runScript({ METRICS_URL: `http://127.0.0.1:${port}/metrics` });
    expect(res.code).toBe(1);
    expect(res.out).toContain(`FAIL http://127.0.0.1:${port}/metrics: ECONNREFUSED`);
  });

  it('fails without a Lease, without a holder, or with a Lease nobody renews', async () => {
    metricsBody = SYNCED;
    lease = { status: 404 };
    expect((await runScript()).out).toMatch(/FAIL Lease cannes-system\/cannes-operator does not exist/);
    lease = { status: 200, body: { spec: { leaseDurationSeconds: 15 } } };
    expect((await runScript()).out).toMatch(/FAIL .*no holder/);
    lease = fresh();
    (lease.body as { spec: { renewTime: string } }).spec.renewTime = new Date(
      Date.now() - 60_000,
    ).toISOString();
    const res = await runScript();
    expect(res.out).toMatch(/FAIL Lease cannes-operator expired/);
    expect(res.code).toBe(1);
    lease = { status: 403 };
    expect((await runScript()).out).toMatch(/HTTP 403/);
  });
});
