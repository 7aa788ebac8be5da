import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HcloudClient } from '../../../operator/hcloud/client.ts';
import { type Simulator, startSimulator } from '../../hcloud-sim/simulator.ts';
import { OpenApi } from './openapi-schema.ts';

// The Hetzner OpenAPI description lives beside the repository (../shared from its root);
// it is reference data, never copied in.
const SPEC = fileURLToPath(new URL('../../../../shared/hcloud/openapi.json', import.meta.url));
const haveSpec = existsSync(SPEC);
if (!haveSpec) console.warn(`SKIPPED: Hetzner OpenAPI description not found at ${SPEC}`);

interface Exchange {
  method: string;
  path: string;
  status: number;
  requestBody: unknown;
  responseBody: unknown;
}

describe.skipIf(!haveSpec)('the simulator against the Hetzner OpenAPI description', () => {
  let sim: Simulator;
  let api: OpenApi;
  const seen: Exchange[] = [];

  const recordingFetch: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    const text = await res.clone().text();
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    seen.push({
      method: init?.method ?? 'GET',
      path: url.pathname.replace(/^\/v1/, ''),
      status: res.status,
      requestBody: typeof init?.body === 'string' ? JSON.parse(init.body) : undefined,
      responseBody: text ? JSON.parse(text) : undefined,
    });
    return res;
  };

  beforeAll(async () => {
    api = new OpenApi(JSON.parse(readFileSync(SPEC, 'utf8')));
    sim = await startSimulator({ actionDurationMs: 30 });
    const c = new HcloudClient({
      endpoint: sim.endpoint,
      fetch: recordingFetch,
      retry: { maxRetries: 0 },
      poll: { initialMs: 10, maxMs: 40 },
    });
    const t = sim.token;
    const key = await c.createSshKey(t, {
      name: 'schema-key',
      public_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl',
    });
    await c.listSshKeys(t);
    const a = await c.createServer(t, {
      name: 'schema-a',
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      labels: { a: 'b' },
    });
    const b = await c.createServer(t, {
      name: 'schema-b',
      server_type: 'cax11',
      image: 'debian-12',
      location: 'hel1',
      ssh_keys: [key.name],
      start_after_create: false,
    });
    await c.waitForActions(t, [a.action, ...a.nextActions, b.action]);
    await c.getAction(t, a.action.id);
    await c.getServer(t, a.server.id);
    await c.listServers(t, { labelSelector: 'a=b' });
    const r = await c.enableRescue(t, b.server.id, { sshKeys: [key.id] });
    await c.waitForActions(t, [r.action]);
    for (const act of [c.powerOn, c.reboot, c.reset, c.disableRescue, c.shutdown, c.powerOff]) {
      await c.waitForActions(t, [await act.call(c, t, b.server.id)]);
    }
    await c.listServerTypes(t);
    await c.listLocations(t);
    await c.listImages(t);
    // Errors: not found, duplicate, invalid input, locked, bad token, rate limited.
    await c.getServer(t, 1).catch(() => {});
    await c.createServer(t, { name: 'schema-a', server_type: 'cx23', image: 'ubuntu-24.04' }).catch(() => {});
    await c.createServer(t, { name: 'schema-c', server_type: 'nope', image: 'ubuntu-24.04' }).catch(() => {});
    const locked = await c.createServer(t, { name: 'schema-d', server_type: 'cx23', image: 'ubuntu-24.04' });
    await c.reset(t, locked.server.id).catch(() => {});
    sim.admin.setFaults({ rateLimitStorm: 1 });
    await c.listServers(t).catch(() => {});
    await c.deleteServer(t, a.server.id);
    await c.deleteSshKey(t, key.id);
    // The endpoints the hcloud CLI uses besides the client's.
    const h = { authorization: `Bearer ${t.reveal()}` };
    for (const p of [
      '/datacenters',
      '/datacenters/4',
      '/server_types/104',
      '/locations/1',
      '/images/161547269',
    ]) {
      const res = await recordingFetch(`${sim.endpoint}${p}`, { headers: h });
      expect(res.status).toBe(200);
    }
    await recordingFetch(`${sim.endpoint}/servers/${b.server.id}/actions`, { headers: h });
    await recordingFetch(`${sim.endpoint}/servers/${b.server.id}`, {
      method: 'PUT',
      headers: { ...h, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'schema-b2', labels: { x: 'y' } }),
    });
    await recordingFetch(`${sim.endpoint}/servers`, { headers: { authorization: 'Bearer nope' } });
  });

  afterAll(async () => {
    await sim?.close();
  });

  it('would notice a wrong shape (the check itself can fail)', () => {
    const ok = seen.find((e) => e.method === 'GET' && /^\/servers\/\d+$/.test(e.path) && e.status === 200);
    expect(ok).toBeDefined();
    const body = Value.Parse(
      Type.Object({ server: Type.Record(Type.String(), Type.Unknown()) }),
      structuredClone(ok!.responseBody),
    );
    const schema = api.responseSchema('/servers/{id}', 'GET', 200);
    expect(api.validate(schema, body)).toEqual([]);
    body.server['status'] = 'booting';
    delete body.server['public_net'];
    body.server['labels'] = { k: 7 };
    const errs = api.validate(schema, body).join('\n');
    expect(errs).toContain('$.server.public_net: missing');
    expect(errs).toContain('$.server.status');
    expect(errs).toContain('$.server.labels.k');
  });

  it('exercised every status the operator relies on', () => {
    const statuses = new Set(seen.map((e) => e.status));
    for (const s of [200, 201, 204, 400, 401, 404, 409, 423, 429]) expect(statuses.has(s)).toBe(true);
  });

  it('answers every request with a body that matches the documented response schema', () => {
    const problems: string[] = [];
    for (const e of seen) {
      if (e.status === 204) continue;
      const template = api.matchPath(e.path);
      expect(template, `no OpenAPI path for ${e.path}`).toBeDefined();
      const schema = api.responseSchema(template!, e.method, e.status);
      expect(schema, `no schema for ${e.method} ${template} ${e.status}`).toBeDefined();
      for (const p of api.validate(schema, e.responseBody))
        problems.push(`${e.method} ${template} ${e.status} ${p}`);
    }
    expect(problems).toEqual([]);
  });

  it('sends request bodies that match the documented request schemas', () => {
    const problems: string[] = [];
    for (const e of seen) {
      if (e.requestBody === undefined) continue;
      const template = api.matchPath(e.path)!;
      const schema = requestSchema(api, template, e.method);
      expect(schema, `no request schema for ${e.method} ${template}`).toBeDefined();
      for (const p of api.validate(schema, e.requestBody)) problems.push(`${e.method} ${template} ${p}`);
    }
    expect(problems).toEqual([]);
  });
});

function requestSchema(api: OpenApi, template: string, method: string): unknown {
  const paths = api.doc['paths'];
  if (typeof paths !== 'object' || paths === null) return undefined;
  const p: unknown = Object.entries(paths).find(([k]) => k === template)?.[1];
  if (typeof p !== 'object' || p === null) return undefined;
  const op: unknown = Object.entries(p).find(([k]) => k === method.toLowerCase())?.[1];
  if (typeof op !== 'object' || op === null) return undefined;
  const rb: unknown = Object.entries(op).find(([k]) => k === 'requestBody')?.[1];
  if (typeof rb !== 'object' || rb === null) return undefined;
  const content: unknown = Object.entries(rb).find(([k]) => k === 'content')?.[1];
  if (typeof content !== 'object' || content === null) return undefined;
  const json: unknown = Object.entries(content).find(([k]) => k === 'application/json')?.[1];
  if (typeof json !== 'object' || json === null) return undefined;
  return Object.entries(json).find(([k]) => k === 'schema')?.[1];
}
