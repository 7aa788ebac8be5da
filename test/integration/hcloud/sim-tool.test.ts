import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Simulator, startSimulator } from '../../hcloud-sim/simulator.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

describe('make sim (tools/sim.ts)', () => {
  it('starts the simulator alone and prints a 64-character token that the API accepts', async () => {
    const child = spawn(process.execPath, ['tools/sim.ts'], {
      cwd: ROOT,
      // State-only hosts: real hosts behind `make sim` are test/hosts' to test.
      env: { ...process.env, SIM_PORT: '0', SIM_ACTION_MS: '10', CANNES_SIM_HOSTS: 'state' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      let out = '';
      child.stdout.setEncoding('utf8');
      for await (const chunk of child.stdout) {
        out += String(chunk);
        if (/^token: .*\n/m.test(out) && out.includes('export HCLOUD_ENDPOINT')) break;
      }
      const token = /^token: (\S+)$/m.exec(out)?.[1] ?? '';
      const endpoint = /simulator on (\S+)/.exec(out)?.[1] ?? '';
      expect(token).toMatch(/^[A-Za-z0-9]{64}$/);
      expect(endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/);
      const res = await fetch(`${endpoint}/servers`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ servers: [], meta: { pagination: { total_entries: 0 } } });
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
    }
  });
});

describe('the simulator admin endpoint', () => {
  let sim: Simulator;
  let auth: Record<string, string>;
  const admin = (path: string, method = 'GET', body?: unknown) =>
    fetch(`${sim.url}/__admin/${path}`, {
      method,
      headers: { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const api = (path: string, init: RequestInit = {}) =>
    fetch(`${sim.endpoint}${path}`, { ...init, headers: auth });

  beforeAll(async () => {
    sim = await startSimulator({ actionDurationMs: 20 });
    auth = { authorization: `Bearer ${sim.token.reveal()}` };
  });
  afterAll(async () => {
    await sim.close();
  });

  it('injects errors per route and method, a given number of times', async () => {
    const r = await admin('faults', 'POST', {
      errors: [{ route: '/servers', method: 'GET', code: 'conflict', count: 1 }],
    });
    expect(r.status).toBe(200);
    const first = await api('/servers');
    expect(first.status).toBe(409);
    expect(await first.json()).toEqual({
      error: { code: 'conflict', message: 'injected conflict', details: null },
    });
    expect(first.headers.get('x-correlation-id')).toMatch(/^[0-9a-f]{16}$/);
    expect((await api('/servers')).status).toBe(200);
  });

  it('refuses a malformed fault description', async () => {
    const r = await admin('faults', 'POST', { errors: [{ route: '/servers' }], bogus: 1 });
    expect(r.status).toBe(400);
  });

  it('starts a 429 storm with rate-limit headers on every answer', async () => {
    await admin('faults', 'PUT', { rateLimitStorm: 2 });
    const a = await api('/servers');
    expect(a.status).toBe(429);
    expect(a.headers.get('ratelimit-limit')).toBe('3600');
    expect(Number(a.headers.get('ratelimit-reset'))).toBeGreaterThan(Date.now() / 1000 - 5);
    expect((await api('/servers')).status).toBe(429);
    const c = await api('/servers');
    expect(c.status).toBe(200);
    expect(Number(c.headers.get('ratelimit-remaining'))).toBeLessThan(3600);
    const stats = await (await admin('stats')).json();
    expect(stats).toMatchObject({ refusedByStorm: 2, refusedByBucket: 0 });
  });

  it('keeps a server in starting on request', async () => {
    await admin('faults', 'DELETE');
    const created = await api('/servers', {
      method: 'POST',
      body: JSON.stringify({
        name: 'admin-stuck',
        server_type: 'cx23',
        image: 'ubuntu-24.04',
        start_after_create: false,
      }),
    });
    const { server } = Value.Parse(
      Type.Object({ server: Type.Object({ id: Type.Integer() }) }),
      await created.json(),
    );
    await new Promise((r) => setTimeout(r, 100));
    expect((await admin(`servers/${server.id}/stuck`, 'POST', { stuck: true })).status).toBe(200);
    expect((await api(`/servers/${server.id}/actions/poweron`, { method: 'POST' })).status).toBe(201);
    await new Promise((r) => setTimeout(r, 200));
    expect(sim.admin.server(server.id)).toMatchObject({ status: 'starting', locked: true });
  });

  it('slows every answer down by the configured latency', async () => {
    await admin('faults', 'PUT', { latencyMs: 150 });
    const t = Date.now();
    await api('/servers');
    // A lower bound only: the latency is injected, so the answer cannot come sooner.
    expect(Date.now() - t).toBeGreaterThanOrEqual(140);
    await admin('faults', 'DELETE');
  });

  it('records every request with all its headers, the token included, for leak scans', async () => {
    await admin('requests', 'DELETE');
    await api('/servers?name=canary-xyz');
    const body = Value.Parse(
      Type.Object({
        requests: Type.Array(
          Type.Object({ url: Type.String(), headers: Type.Record(Type.String(), Type.Unknown()) }),
        ),
      }),
      await (await admin('requests')).json(),
    );
    const hit = body.requests.find((r) => r.url.includes('canary-xyz'));
    expect(hit?.headers['authorization']).toBe(`Bearer ${sim.token.reveal()}`);
    expect(sim.requests.some((r) => r.url === '/v1/servers?name=canary-xyz' && r.route === '/servers')).toBe(
      true,
    );
  });
});
