/**
 * A Hetzner Cloud API simulator (node:http), faithful to the public API for what the
 * operator uses: servers and their actions, actions, SSH keys, server types, locations,
 * datacenters, images. JSON shapes follow the OpenAPI description (test/unit/hcloud checks
 * them against ../shared/hcloud/openapi.json). Hosts behind servers come from a
 * HostProvider (state-only by default; real namespaced hosts in test/hosts/).
 *
 * Test hooks: fault injection (options.faults, `admin`, or /__admin/* over HTTP), every
 * request recorded verbatim (headers and body, so an end-to-end test can scan them for
 * leaked canaries), and counters of what the rate limiter refused.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { Secret } from '../../common/secret.ts';
import {
  DATACENTERS,
  type DatacenterJson,
  IMAGES,
  type ImageJson,
  LOCATIONS,
  orderable,
  SERVER_TYPES,
  type ServerTypeJson,
} from './catalog.ts';
import type { BootMode, HostProvider } from './host-provider.ts';
import { matches, parseSelector, SelectorError, validLabels } from './label-selector.ts';
import { StateOnlyProvider } from './state-only-provider.ts';

// ---- public types --------------------------------------------------------------------

export interface ErrorFault {
  /** Route template (`/servers/{id}/actions/poweron`) or `*`. */
  route: string;
  method?: string;
  /** Hetzner error code to answer with. */
  code: string;
  /** Probability per matching request (default 1). */
  rate?: number;
  /** Stop after this many injected errors (default unlimited). */
  count?: number;
}

export interface ActionFault {
  /** Action command (`start_server`, `enable_rescue`, `reset`, ...). */
  command: string;
  code?: string;
  message?: string;
  count?: number;
}

export interface Faults {
  /** Added to every API response. */
  latencyMs: number;
  errors: ErrorFault[];
  failActions: ActionFault[];
  /** The next N API requests get 429 whatever the bucket holds. */
  rateLimitStorm: number;
  /** Servers with these names (at create) never leave `starting`. */
  stuckStartingNames: string[];
  /** `serverType@location` pairs answered with resource_unavailable. */
  unavailable: string[];
}

export interface SimulatorOptions {
  host?: string;
  /** 0 (default): any free port. */
  port?: number;
  /** The project's API token (64 chars). Random when absent. */
  token?: string;
  /** Further valid tokens (each with its own rate-limit bucket). */
  extraTokens?: string[];
  /** Tokens that may read but not change anything (token_readonly). */
  readonlyTokens?: string[];
  provider?: HostProvider;
  /** Close the provider in `close()` (default true). */
  closeProvider?: boolean;
  /** How long actions run, in ms; per command or one number. Default 300. */
  actionDurationMs?: number | Record<string, number>;
  /**
   * From the end of a power-on/reset/reboot action to sshd answering, per boot kind. As on
   * Hetzner, the action ends when the machine powers on (status `running`); the system boots
   * after it. Default 0: the host is up when the action ends (the rig's tests rely on it).
   */
  bootToSshMs?: { rescue: number; os: number };
  /** Per-token bucket. Default Hetzner's: 3600, refilling 1 per second. */
  rateLimit?: { limit?: number; refillPerSecond?: number };
  faults?: Partial<Faults>;
  /** Keep at most this many recorded requests (oldest dropped first). Default 100 000. */
  maxRecordedRequests?: number;
  /** Rescue turns itself off when unused for this long. Default 60 min. */
  rescueTimeoutMs?: number;
}

export interface RecordedRequest {
  readonly at: string;
  readonly method: string;
  /** Path and query as received. */
  readonly url: string;
  /** Every header as received, authorization included. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body: string;
  readonly status: number;
  /** Route template matched, or '' when none. */
  readonly route: string;
}

export interface SimulatorStats {
  requests: number;
  /** Requests refused because the token's bucket was empty. */
  refusedByBucket: number;
  /** Requests refused by an injected 429 storm. */
  refusedByStorm: number;
  injectedErrors: number;
}

export interface SimulatorAdmin {
  setFaults(f: Partial<Faults>): void;
  clearFaults(): void;
  faults(): Faults;
  stats(): SimulatorStats;
  /** The server's API JSON (undefined when it does not exist). */
  server(id: number): Record<string, unknown> | undefined;
  setStuckInStarting(id: number, stuck: boolean): void;
  /** How long actions run from now on (ms; one number or per command, `default` for the rest). */
  setActionDuration(d: number | Record<string, number>): void;
  /** The token bucket of `token` (tokens left, fractional). */
  bucket(token: string): number | undefined;
  clearRequests(): void;
}

export interface Simulator {
  /** Base URL, e.g. http://127.0.0.1:4000 (the API is under /v1). */
  readonly url: string;
  /** `${url}/v1`: what HCLOUD_ENDPOINT and the client take. */
  readonly endpoint: string;
  readonly token: Secret<string>;
  readonly admin: SimulatorAdmin;
  readonly provider: HostProvider;
  /** Every request received, in order (live). */
  readonly requests: readonly RecordedRequest[];
  close(): Promise<void>;
}

/** What POST /__admin/faults accepts (checked, unknown keys refused). */
const FaultsBody = Type.Partial(
  Type.Object(
    {
      latencyMs: Type.Number({ minimum: 0 }),
      errors: Type.Array(
        Type.Object({
          route: Type.String(),
          method: Type.Optional(Type.String()),
          code: Type.String(),
          rate: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
          count: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      ),
      failActions: Type.Array(
        Type.Object({
          command: Type.String(),
          code: Type.Optional(Type.String()),
          message: Type.Optional(Type.String()),
          count: Type.Optional(Type.Integer({ minimum: 0 })),
        }),
      ),
      rateLimitStorm: Type.Integer({ minimum: 0 }),
      stuckStartingNames: Type.Array(Type.String()),
      unavailable: Type.Array(Type.String()),
    },
    { additionalProperties: false },
  ),
);

// ---- status codes of Hetzner's error codes ----------------------------------------------

const STATUS_OF: Record<string, number> = {
  json_error: 400,
  invalid_input: 400,
  unauthorized: 401,
  forbidden: 403,
  token_readonly: 403,
  resource_limit_exceeded: 403,
  not_found: 404,
  method_not_allowed: 405,
  uniqueness_error: 409,
  conflict: 409,
  resource_unavailable: 412,
  service_error: 422,
  unsupported_error: 422,
  locked: 423,
  protected: 423,
  rate_limit_exceeded: 429,
  server_error: 500,
  unknown_error: 500,
  // Statuses of these server-specific codes are not documented; 412/422/410 as for their kin.
  placement_error: 412,
  no_space_left_in_location: 412,
  server_not_stopped: 412,
  invalid_server_type: 422,
  deprecated_api_endpoint: 410,
  unavailable: 503,
  maintenance: 503,
  timeout: 504,
};

class ApiError extends Error {
  readonly code: string;
  readonly details: unknown;
  constructor(code: string, message: string, details: unknown = null) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

const invalid = (message: string, fields: { name: string; messages: string[] }[] = []) =>
  new ApiError('invalid_input', message, { fields });

// ---- state -----------------------------------------------------------------------------

interface ActionState {
  id: number;
  command: string;
  status: 'running' | 'success' | 'error';
  progress: number;
  started: string;
  finished: string | null;
  resources: { id: number; type: string }[];
  error: { code: string; message: string } | null;
}

interface ServerState {
  id: number;
  name: string;
  status: string;
  created: string;
  serverType: ServerTypeJson;
  datacenter: DatacenterJson;
  image: ImageJson;
  ipv4: string | null;
  ipv6: string | null;
  labels: Record<string, string>;
  rescue: { rootPassword: string; sshKeys: string[] } | null;
  rescueTimer: NodeJS.Timeout | undefined;
  running: Set<number>;
  stuckStarting: boolean;
  deleted: boolean;
  /** Actions run one after another: the chain of work for this server. */
  chain: Promise<void>;
  /** A boot still under way after its action ended (`bootToSshMs`): the next action waits. */
  booting: Promise<void>;
}

interface SshKeyState {
  id: number;
  name: string;
  fingerprint: string;
  public_key: string;
  labels: Record<string, string>;
  created: string;
}

const emptyFaults = (): Faults => ({
  latencyMs: 0,
  errors: [],
  failActions: [],
  rateLimitStorm: 0,
  stuckStartingNames: [],
  unavailable: [],
});

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
export function randomToken(length = 64): string {
  let s = '';
  for (let i = 0; i < length; i++) s += ALNUM[randomInt(ALNUM.length)];
  return s;
}

const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

type Handler = (ctx: Ctx) => Promise<[number, unknown]> | [number, unknown];
interface Ctx {
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
  token: string;
  readonly: boolean;
}

/** Start a simulator; it listens on 127.0.0.1 (or `host`) until `close()`. */
export async function startSimulator(opts: SimulatorOptions = {}): Promise<Simulator> {
  const token = opts.token ?? randomToken();
  const tokens = new Set([token, ...(opts.extraTokens ?? []), ...(opts.readonlyTokens ?? [])]);
  const readonlyTokens = new Set(opts.readonlyTokens ?? []);
  const provider = opts.provider ?? new StateOnlyProvider();
  const limit = opts.rateLimit?.limit ?? 3600;
  const refill = opts.rateLimit?.refillPerSecond ?? 1;
  const rescueTimeoutMs = opts.rescueTimeoutMs ?? 60 * 60_000;
  let faults: Faults = { ...emptyFaults(), ...opts.faults };
  const stats: SimulatorStats = { requests: 0, refusedByBucket: 0, refusedByStorm: 0, injectedErrors: 0 };
  const requests: RecordedRequest[] = [];
  const maxRecorded = opts.maxRecordedRequests ?? 100_000;
  const buckets = new Map<string, { tokens: number; at: number }>();
  const servers = new Map<number, ServerState>();
  const actions = new Map<number, ActionState>();
  const sshKeys = new Map<number, SshKeyState>();
  let nextServerId = 1000 + randomInt(1000);
  let nextActionId = 50_000 + randomInt(1000);
  let nextKeyId = 3000 + randomInt(1000);
  // Public IPv4s from 198.18.0.0/15 (RFC 2544 benchmarking range); a random start so two
  // simulators running side by side rarely hand out the same address.
  let nextIp = randomInt(1, 120_000);
  const timers = new Set<NodeJS.Timeout>();
  const inflight = new Set<Promise<unknown>>();

  let actionDuration = opts.actionDurationMs;
  const durationOf = (command: string): number => {
    const d = actionDuration;
    if (typeof d === 'number') return d;
    return d?.[command] ?? d?.['default'] ?? 300;
  };

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  // The last /24 (198.19.255.0/24) is kept for the test rig's own addresses (the hosts'
  // gateway is 198.19.255.254), so no server ever gets one of them.
  function allocIp(): string {
    for (;;) {
      const n = nextIp++ % (131072 - 256);
      if ((n & 0xff) === 0 || (n & 0xff) === 255) continue;
      return `198.${18 + (n >> 16)}.${(n >> 8) & 0xff}.${n & 0xff}`;
    }
  }

  // ---- rate limit ------------------------------------------------------------------------

  function bucketOf(tok: string) {
    const t = Date.now();
    let b = buckets.get(tok);
    if (!b) {
      b = { tokens: limit, at: t };
      buckets.set(tok, b);
    }
    b.tokens = Math.min(limit, b.tokens + ((t - b.at) / 1000) * refill);
    b.at = t;
    return b;
  }

  function rateHeaders(tok: string): Record<string, string> {
    const b = bucketOf(tok);
    const full = Math.ceil((limit - b.tokens) / refill);
    return {
      'RateLimit-Limit': String(limit),
      'RateLimit-Remaining': String(Math.max(0, Math.floor(b.tokens))),
      'RateLimit-Reset': String(Math.floor(Date.now() / 1000) + full),
    };
  }

  // ---- actions ---------------------------------------------------------------------------

  function newAction(command: string, resources: { id: number; type: string }[]): ActionState {
    const a: ActionState = {
      id: nextActionId++,
      command,
      status: 'running',
      progress: 0,
      started: now(),
      finished: null,
      resources,
      error: null,
    };
    actions.set(a.id, a);
    return a;
  }

  function takeActionFault(command: string): ActionFault | undefined {
    const f = faults.failActions.find((x) => x.command === command && (x.count === undefined || x.count > 0));
    if (f && f.count !== undefined) f.count--;
    return f;
  }

  /**
   * Run `work` as action `a` on server `s`: the server is locked until it ends; actions on
   * one server run in order. A fault or a failing host ends it in `error`.
   */
  function runAction(s: ServerState, a: ActionState, work: () => Promise<void>, onError?: () => void): void {
    s.running.add(a.id);
    const p = s.chain.then(async () => {
      await s.booting.catch(() => {});
      const fault = takeActionFault(a.command);
      await sleep(durationOf(a.command) / 2);
      a.progress = 50;
      await sleep(durationOf(a.command) / 2);
      try {
        if (fault) throw new ApiError(fault.code ?? 'action_failed', fault.message ?? 'Action failed');
        await work();
        a.status = 'success';
      } catch (e) {
        a.status = 'error';
        a.error =
          e instanceof ApiError
            ? { code: e.code, message: e.message }
            : { code: 'action_failed', message: 'host operation failed' };
        onError?.();
      }
      a.progress = 100;
      a.finished = now();
      s.running.delete(a.id);
    });
    s.chain = p;
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  }

  function bootMode(s: ServerState): BootMode {
    if (s.rescue) {
      const mode: BootMode = {
        kind: 'rescue',
        rootPassword: s.rescue.rootPassword,
        sshKeys: s.rescue.sshKeys,
      };
      // Rescue is for one boot: the flag turns itself off once the server booted into it.
      s.rescue = null;
      clearRescueTimer(s);
      return mode;
    }
    return { kind: 'os' };
  }

  function clearRescueTimer(s: ServerState): void {
    if (s.rescueTimer) {
      clearTimeout(s.rescueTimer);
      timers.delete(s.rescueTimer);
      s.rescueTimer = undefined;
    }
  }

  /** Boot; a server marked stuck stays in `starting` and its action never finishes. */
  async function boot(s: ServerState): Promise<void> {
    if (s.deleted) return;
    const wasUp = s.status !== 'off';
    s.status = 'starting';
    if (s.stuckStarting) await new Promise<never>(() => {});
    const mode = bootMode(s);
    const toSsh = opts.bootToSshMs?.[mode.kind] ?? 0;
    if (toSsh > 0) {
      // A reset cuts the running system at once (its sshd stops answering)...
      if (wasUp) await provider.powerOff(s.id);
      // ...and the action ends at power-on; the system comes up (sshd answers) `toSsh` later.
      s.status = 'running';
      s.booting = sleep(toSsh).then(() => (s.deleted ? undefined : provider.boot(s.id, mode)));
      s.booting.catch(() => {});
      return;
    }
    await provider.boot(s.id, mode);
    if (!s.deleted) s.status = 'running';
  }

  /** Power off; a server that is already off stays as it is (the action still succeeds). */
  async function powerOff(s: ServerState): Promise<void> {
    if (s.status === 'off') return;
    s.status = 'stopping';
    await provider.powerOff(s.id);
    if (!s.deleted) s.status = 'off';
  }

  // ---- JSON views ------------------------------------------------------------------------

  function serverJson(s: ServerState): Record<string, unknown> {
    return {
      id: s.id,
      name: s.name,
      status: s.status,
      created: s.created,
      public_net: {
        ipv4: s.ipv4 && {
          id: s.id + 70_000_000,
          ip: s.ipv4,
          blocked: false,
          dns_ptr: `static.${s.ipv4}.clients.your-server.de`,
        },
        ipv6: s.ipv6 && { id: s.id + 80_000_000, ip: s.ipv6, blocked: false, dns_ptr: [] },
        floating_ips: [],
        firewalls: [],
      },
      private_net: [],
      server_type: s.serverType,
      datacenter: s.datacenter,
      location: s.datacenter.location,
      image: s.image,
      iso: null,
      rescue_enabled: s.rescue !== null,
      locked: s.running.size > 0,
      backup_window: null,
      outgoing_traffic: 0,
      ingoing_traffic: 0,
      included_traffic: 21990232555520,
      protection: { delete: false, rebuild: false },
      labels: s.labels,
      volumes: [],
      load_balancers: [],
      primary_disk_size: s.serverType.disk,
      placement_group: null,
    };
  }

  // ---- helpers ---------------------------------------------------------------------------

  function paginate<T>(items: T[], q: URLSearchParams): { items: T[]; meta: unknown } {
    const page = Math.max(1, intParam(q, 'page') ?? 1);
    const perPage = Math.min(50, Math.max(1, intParam(q, 'per_page') ?? 25));
    const total = items.length;
    const last = Math.max(1, Math.ceil(total / perPage));
    return {
      items: items.slice((page - 1) * perPage, page * perPage),
      meta: {
        pagination: {
          page,
          per_page: perPage,
          previous_page: page > 1 ? page - 1 : null,
          next_page: page < last ? page + 1 : null,
          last_page: last,
          total_entries: total,
        },
      },
    };
  }

  function intParam(q: URLSearchParams, name: string): number | undefined {
    const v = q.get(name);
    if (v === null) return undefined;
    if (!/^\d+$/.test(v)) throw invalid(`invalid ${name}`, [{ name, messages: ['must be an integer'] }]);
    return Number(v);
  }

  function selectorFilter<T extends { labels: Record<string, string> }>(items: T[], q: URLSearchParams): T[] {
    const sel = q.get('label_selector');
    if (sel === null) return items;
    try {
      const reqs = parseSelector(sel);
      return items.filter((x) => matches(reqs, x.labels));
    } catch (e) {
      if (e instanceof SelectorError) throw invalid(`label_selector: ${e.message}`);
      throw e;
    }
  }

  function sortBy<T extends { id: number; name: string | null; created?: string }>(
    items: T[],
    q: URLSearchParams,
  ) {
    const sorts = q.getAll('sort');
    const out = [...items].sort((a, b) => a.id - b.id);
    for (const s of [...sorts].reverse()) {
      const [field, dir] = s.split(':');
      if (!['id', 'name', 'created'].includes(field ?? '') || (dir && dir !== 'asc' && dir !== 'desc'))
        throw invalid(`invalid sort ${s}`);
      const sign = dir === 'desc' ? -1 : 1;
      out.sort((a, b) => {
        const x = field === 'id' ? a.id : field === 'name' ? (a.name ?? '') : (a.created ?? '');
        const y = field === 'id' ? b.id : field === 'name' ? (b.name ?? '') : (b.created ?? '');
        return x < y ? -sign : x > y ? sign : 0;
      });
    }
    return out;
  }

  function serverOf(ctx: Ctx): ServerState {
    const id = Number(ctx.params['id']);
    const s = servers.get(id);
    if (!s || s.deleted) throw new ApiError('not_found', `server with ID '${ctx.params['id']}' not found`);
    return s;
  }

  function mutating(ctx: Ctx): void {
    if (ctx.readonly) throw new ApiError('token_readonly', 'The token you are using is read-only');
  }

  function unlocked(s: ServerState): void {
    if (s.running.size > 0) throw new ApiError('locked', 'server is locked by a running action');
  }

  function obj(body: unknown): Record<string, unknown> {
    if (body === undefined || body === null) return {};
    if (typeof body !== 'object' || Array.isArray(body)) throw invalid('request body must be a JSON object');
    return Object.fromEntries(Object.entries(body));
  }

  function str(b: Record<string, unknown>, name: string, required: boolean): string | undefined {
    const v = b[name];
    if (v === undefined || v === null) {
      if (required)
        throw invalid(`invalid input in field '${name}'`, [
          { name, messages: ['Missing data for required field.'] },
        ]);
      return undefined;
    }
    if (typeof v !== 'string' && typeof v !== 'number')
      throw invalid(`invalid input in field '${name}'`, [{ name, messages: ['Not a valid string.'] }]);
    return String(v);
  }

  function labelsOf(b: Record<string, unknown>): Record<string, string> {
    const l = b['labels'];
    if (l === undefined || l === null) return {};
    if (typeof l !== 'object' || Array.isArray(l))
      throw invalid("invalid input in field 'labels'", [
        { name: 'labels', messages: ['Not a valid mapping type.'] },
      ]);
    const labels = Object.fromEntries(Object.entries(l));
    const bad = validLabels(labels);
    if (bad) throw invalid(bad, [{ name: 'labels', messages: [bad] }]);
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(labels)) out[k] = String(v);
    return out;
  }

  function keysFrom(list: unknown, field: string): SshKeyState[] {
    if (list === undefined || list === null) return [];
    if (!Array.isArray(list)) throw invalid(`invalid input in field '${field}'`);
    return list.map((ref: unknown) => {
      const k = [...sshKeys.values()].find((x) => String(x.id) === String(ref) || x.name === ref);
      if (!k)
        throw invalid(`ssh key ${JSON.stringify(ref)} not found`, [{ name: field, messages: ['not found'] }]);
      return k;
    });
  }

  function findType(ref: string): ServerTypeJson | undefined {
    return SERVER_TYPES.find((t) => t.name === ref || String(t.id) === ref);
  }

  // ---- handlers --------------------------------------------------------------------------

  const createServerHandler: Handler = (ctx) => {
    mutating(ctx);
    const b = obj(ctx.body);
    const name = str(b, 'name', true)!;
    if (
      !/^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(
        name,
      )
    )
      throw invalid("invalid input in field 'name'", [
        { name: 'name', messages: ['Name must be a valid hostname.'] },
      ]);
    const typeRef = str(b, 'server_type', true)!;
    const serverType = findType(typeRef);
    if (!serverType)
      throw invalid(`server type ${typeRef} not found`, [{ name: 'server_type', messages: ['not found'] }]);
    const imageRef = str(b, 'image', true)!;
    const image = IMAGES.find(
      (i) => String(i.id) === imageRef || (i.name === imageRef && i.architecture === serverType.architecture),
    );
    if (!image) throw invalid(`image ${imageRef} not found`, [{ name: 'image', messages: ['not found'] }]);
    if (image.architecture !== serverType.architecture)
      throw invalid('image architecture does not match server type', [
        { name: 'image', messages: ['architecture mismatch'] },
      ]);
    const locRef = str(b, 'location', false);
    const dcRef = str(b, 'datacenter', false);
    let datacenter: DatacenterJson | undefined;
    if (dcRef !== undefined) datacenter = DATACENTERS.find((d) => d.name === dcRef || String(d.id) === dcRef);
    else if (locRef !== undefined)
      datacenter = DATACENTERS.find((d) => d.location.name === locRef || String(d.location.id) === locRef);
    else datacenter = DATACENTERS.find((d) => serverType.locations.some((l) => l.name === d.location.name));
    if (!datacenter)
      throw invalid(`location ${locRef ?? dcRef} not found`, [
        { name: locRef ? 'location' : 'datacenter', messages: ['not found'] },
      ]);
    const locName = datacenter.location.name;
    // A type not sold in the location, or deprecated there and past its unavailable_after
    // (cx22 since 2026): the answer Hetzner gives (quoted in
    // testflows/TestFlows-GitHub-Hetzner-Runners#96, January 2026).
    if (!orderable(serverType, locName))
      throw invalid('unsupported location for server type', [
        { name: 'server_type', messages: ['unsupported location for server type'] },
      ]);
    if (faults.unavailable.includes(`${serverType.name}@${locName}`))
      throw new ApiError(
        'resource_unavailable',
        `server type ${serverType.name} is unavailable in ${locName}`,
      );
    const labels = labelsOf(b);
    const keys = keysFrom(b['ssh_keys'], 'ssh_keys');
    const userData = str(b, 'user_data', false);
    if (userData !== undefined && Buffer.byteLength(userData) > 32 * 1024)
      throw invalid('user_data is too long', [
        { name: 'user_data', messages: ['Longer than maximum length 32768.'] },
      ]);
    const startAfterCreate = b['start_after_create'] === undefined ? true : b['start_after_create'];
    if (typeof startAfterCreate !== 'boolean') throw invalid("invalid input in field 'start_after_create'");
    const pn = b['public_net'] === undefined ? {} : obj(b['public_net']);
    if ([...servers.values()].some((s) => !s.deleted && s.name === name))
      throw new ApiError('uniqueness_error', 'server name is already used', {
        fields: [{ name: 'name', messages: ['is already used'] }],
      });

    const id = nextServerId++;
    const s: ServerState = {
      id,
      name,
      status: 'initializing',
      created: now(),
      serverType,
      datacenter,
      image,
      ipv4: pn['enable_ipv4'] === false ? null : allocIp(),
      ipv6:
        pn['enable_ipv6'] === false
          ? null
          : `2001:db8:${(id >> 16).toString(16)}:${(id & 0xffff).toString(16)}::/64`,
      labels,
      rescue: null,
      rescueTimer: undefined,
      running: new Set(),
      stuckStarting: faults.stuckStartingNames.includes(name),
      deleted: false,
      chain: Promise.resolve(),
      booting: Promise.resolve(),
    };
    servers.set(id, s);
    // Hetzner mails no password and returns null when an SSH key is given.
    const rootPassword = keys.length > 0 ? null : randomToken(20);
    const res = [{ id, type: 'server' }];
    const create = newAction('create_server', res);
    const hostSpec = {
      serverId: id,
      name,
      ipv4: s.ipv4 ?? '',
      image: image.name ?? String(image.id),
      sshKeys: keys.map((k) => k.public_key),
      ...(rootPassword !== null ? { rootPassword } : {}),
      ...(userData !== undefined ? { userData } : {}),
    };
    runAction(
      s,
      create,
      async () => {
        await provider.create(hostSpec);
        if (!startAfterCreate && !s.deleted) s.status = 'off';
      },
      () => {
        s.status = 'off';
      },
    );
    const next: ActionState[] = [];
    if (startAfterCreate) {
      const start = newAction('start_server', res);
      next.push(start);
      runAction(s, start, () => boot(s));
    }
    return [201, { server: serverJson(s), action: create, next_actions: next, root_password: rootPassword }];
  };

  function simpleAction(
    command: string,
    apiCommand: string,
    work: (s: ServerState) => Promise<void>,
  ): Handler {
    return (ctx) => {
      mutating(ctx);
      const s = serverOf(ctx);
      unlocked(s);
      const a = newAction(apiCommand, [{ id: s.id, type: 'server' }]);
      runAction(s, a, () => work(s));
      void command;
      return [201, { action: a }];
    };
  }

  const routes: [string, string, Handler][] = [
    ['POST', '/servers', createServerHandler],
    [
      'GET',
      '/servers',
      (ctx) => {
        let list = [...servers.values()].filter((s) => !s.deleted);
        const name = ctx.query.get('name');
        if (name !== null) list = list.filter((s) => s.name === name);
        const st = ctx.query.getAll('status');
        if (st.length > 0) list = list.filter((s) => st.includes(s.status));
        list = selectorFilter(list, ctx.query);
        const sorted = sortBy(list, ctx.query);
        const p = paginate(sorted, ctx.query);
        return [200, { servers: p.items.map(serverJson), meta: p.meta }];
      },
    ],
    ['GET', '/servers/{id}', (ctx) => [200, { server: serverJson(serverOf(ctx)) }]],
    [
      'PUT',
      '/servers/{id}',
      (ctx) => {
        mutating(ctx);
        const s = serverOf(ctx);
        const b = obj(ctx.body);
        const name = str(b, 'name', false);
        if (name !== undefined && name !== s.name) {
          if ([...servers.values()].some((x) => !x.deleted && x.name === name))
            throw new ApiError('uniqueness_error', 'server name is already used');
          s.name = name;
        }
        if (b['labels'] !== undefined) s.labels = labelsOf(b);
        return [200, { server: serverJson(s) }];
      },
    ],
    [
      'DELETE',
      '/servers/{id}',
      (ctx) => {
        mutating(ctx);
        const s = serverOf(ctx);
        // Deleting is allowed while an action runs: Hetzner cancels what the server was doing.
        s.deleted = true;
        s.status = 'deleting';
        clearRescueTimer(s);
        const a = newAction('delete_server', [{ id: s.id, type: 'server' }]);
        s.chain = Promise.resolve();
        runAction(s, a, async () => {
          await provider.destroy(s.id);
          servers.delete(s.id);
        });
        return [200, { action: a }];
      },
    ],
    [
      'POST',
      '/servers/{id}/actions/poweron',
      simpleAction('poweron', 'start_server', async (s) => {
        if (s.status !== 'running') await boot(s);
      }),
    ],
    ['POST', '/servers/{id}/actions/poweroff', simpleAction('poweroff', 'stop_server', (s) => powerOff(s))],
    [
      'POST',
      '/servers/{id}/actions/shutdown',
      simpleAction('shutdown', 'shutdown_server', (s) => powerOff(s)),
    ],
    // A reset or reboot of a powered-off server starts it, like pressing the button.
    ['POST', '/servers/{id}/actions/reset', simpleAction('reset', 'reset_server', (s) => boot(s))],
    ['POST', '/servers/{id}/actions/reboot', simpleAction('reboot', 'reboot_server', (s) => boot(s))],
    [
      'POST',
      '/servers/{id}/actions/enable_rescue',
      (ctx) => {
        mutating(ctx);
        const s = serverOf(ctx);
        unlocked(s);
        const b = obj(ctx.body);
        const type = b['type'] ?? 'linux64';
        if (type !== 'linux64')
          throw invalid("invalid input in field 'type'", [
            { name: 'type', messages: ['Must be one of: linux64.'] },
          ]);
        const keys = keysFrom(b['ssh_keys'], 'ssh_keys');
        const rootPassword = randomToken(20);
        const a = newAction('enable_rescue', [{ id: s.id, type: 'server' }]);
        runAction(s, a, async () => {
          s.rescue = { rootPassword, sshKeys: keys.map((k) => k.public_key) };
          clearRescueTimer(s);
          const t = setTimeout(() => {
            timers.delete(t);
            s.rescue = null;
          }, rescueTimeoutMs);
          timers.add(t);
          s.rescueTimer = t;
        });
        return [201, { action: a, root_password: rootPassword }];
      },
    ],
    [
      'POST',
      '/servers/{id}/actions/disable_rescue',
      simpleAction('disable_rescue', 'disable_rescue', async (s) => {
        s.rescue = null;
        clearRescueTimer(s);
      }),
    ],
    [
      'GET',
      '/servers/{id}/actions',
      (ctx) => {
        const s = serverOf(ctx);
        const list = [...actions.values()].filter((a) =>
          a.resources.some((r) => r.type === 'server' && r.id === s.id),
        );
        const p = paginate(list, ctx.query);
        return [200, { actions: p.items, meta: p.meta }];
      },
    ],
    [
      'GET',
      '/servers/{id}/actions/{action_id}',
      (ctx) => {
        const s = serverOf(ctx);
        const a = actions.get(Number(ctx.params['action_id']));
        if (!a?.resources.some((r) => r.id === s.id)) throw new ApiError('not_found', 'action not found');
        return [200, { action: a }];
      },
    ],
    [
      'GET',
      '/actions',
      (ctx) => {
        const ids = ctx.query.getAll('id');
        // Listing every action was removed from the API in 2025: ids are required.
        if (ids.length === 0)
          throw invalid('id is required', [{ name: 'id', messages: ['Missing data for required field.'] }]);
        let list = ids.map((i) => actions.get(Number(i))).filter((a): a is ActionState => a !== undefined);
        const st = ctx.query.getAll('status');
        if (st.length > 0) list = list.filter((a) => st.includes(a.status));
        const p = paginate(list, ctx.query);
        return [200, { actions: p.items, meta: p.meta }];
      },
    ],
    [
      'GET',
      '/actions/{id}',
      (ctx) => {
        const a = actions.get(Number(ctx.params['id']));
        if (!a) throw new ApiError('not_found', `action with ID '${ctx.params['id']}' not found`);
        return [200, { action: a }];
      },
    ],
    [
      'GET',
      '/server_types',
      (ctx) => {
        const name = ctx.query.get('name');
        // A type past its unavailable_after everywhere is no longer listed (openapi
        // deprecation_info); GET /server_types/{id} still answers for existing servers.
        const p = paginate(
          SERVER_TYPES.filter(
            (t) => (name === null || t.name === name) && t.locations.some((l) => orderable(t, l.name)),
          ),
          ctx.query,
        );
        return [200, { server_types: p.items, meta: p.meta }];
      },
    ],
    ['GET', '/server_types/{id}', (ctx) => [200, { server_type: byId(SERVER_TYPES, ctx, 'server type') }]],
    [
      'GET',
      '/locations',
      (ctx) => {
        const name = ctx.query.get('name');
        const p = paginate(
          sortBy(
            LOCATIONS.filter((l) => name === null || l.name === name),
            ctx.query,
          ),
          ctx.query,
        );
        return [200, { locations: p.items, meta: p.meta }];
      },
    ],
    ['GET', '/locations/{id}', (ctx) => [200, { location: byId(LOCATIONS, ctx, 'location') }]],
    [
      'GET',
      '/datacenters',
      (ctx) => {
        const name = ctx.query.get('name');
        const p = paginate(
          DATACENTERS.filter((d) => name === null || d.name === name),
          ctx.query,
        );
        return [200, { datacenters: p.items, recommendation: DATACENTERS[0]!.id, meta: p.meta }];
      },
    ],
    ['GET', '/datacenters/{id}', (ctx) => [200, { datacenter: byId(DATACENTERS, ctx, 'datacenter') }]],
    [
      'GET',
      '/images',
      (ctx) => {
        const q = ctx.query;
        const name = q.get('name');
        const arch = q.get('architecture');
        const types = q.getAll('type');
        const statuses = q.getAll('status');
        let list = IMAGES.filter(
          (i) =>
            (name === null || i.name === name) &&
            // Without an architecture filter the API returns x86 images only (kept when arm
            // images arrived so older clients that look images up by name keep working).
            (arch === null ? i.architecture === 'x86' : i.architecture === arch) &&
            (types.length === 0 || types.includes(i.type)) &&
            (statuses.length === 0 || statuses.includes(i.status)),
        );
        list = selectorFilter(list, q);
        const p = paginate(sortBy(list, q), q);
        return [200, { images: p.items, meta: p.meta }];
      },
    ],
    ['GET', '/images/{id}', (ctx) => [200, { image: byId(IMAGES, ctx, 'image') }]],
    [
      'POST',
      '/ssh_keys',
      (ctx) => {
        mutating(ctx);
        const b = obj(ctx.body);
        const name = str(b, 'name', true)!;
        const publicKey = str(b, 'public_key', true)!.trim();
        const m =
          /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) ([A-Za-z0-9+/=]+)( .*)?$/.exec(
            publicKey,
          );
        if (!m)
          throw invalid('invalid public key', [{ name: 'public_key', messages: ['invalid public key'] }]);
        const fingerprint = createHash('md5')
          .update(Buffer.from(m[2]!, 'base64'))
          .digest('hex')
          .replace(/(..)(?!$)/g, '$1:');
        for (const k of sshKeys.values()) {
          if (k.name === name)
            throw new ApiError('uniqueness_error', 'SSH key with the same name already exists', {
              fields: [{ name: 'name', messages: ['is already used'] }],
            });
          if (k.fingerprint === fingerprint)
            throw new ApiError('uniqueness_error', 'SSH key with the same fingerprint already exists', {
              fields: [{ name: 'public_key', messages: ['is already used'] }],
            });
        }
        const k: SshKeyState = {
          id: nextKeyId++,
          name,
          fingerprint,
          public_key: publicKey,
          labels: labelsOf(b),
          created: now(),
        };
        sshKeys.set(k.id, k);
        return [201, { ssh_key: k }];
      },
    ],
    [
      'GET',
      '/ssh_keys',
      (ctx) => {
        const q = ctx.query;
        const name = q.get('name');
        const fp = q.get('fingerprint');
        let list = [...sshKeys.values()].filter(
          (k) => (name === null || k.name === name) && (fp === null || k.fingerprint === fp),
        );
        list = selectorFilter(list, q);
        const p = paginate(sortBy(list, q), q);
        return [200, { ssh_keys: p.items, meta: p.meta }];
      },
    ],
    ['GET', '/ssh_keys/{id}', (ctx) => [200, { ssh_key: byId([...sshKeys.values()], ctx, 'SSH key') }]],
    [
      'DELETE',
      '/ssh_keys/{id}',
      (ctx) => {
        mutating(ctx);
        const k = byId([...sshKeys.values()], ctx, 'SSH key');
        sshKeys.delete(k.id);
        return [204, undefined];
      },
    ],
  ];

  function byId<T extends { id: number }>(list: readonly T[], ctx: Ctx, what: string): T {
    const x = list.find((i) => String(i.id) === ctx.params['id']);
    if (!x) throw new ApiError('not_found', `${what} with ID '${ctx.params['id']}' not found`);
    return x;
  }

  const compiled = routes.map(([method, template, handler]) => ({
    method,
    template,
    handler,
    re: new RegExp(`^${template.replace(/\{(\w+)\}/g, '(?<$1>[^/]+)')}$`),
  }));

  function takeErrorFault(method: string, route: string): ErrorFault | undefined {
    const f = faults.errors.find(
      (x) =>
        (x.route === '*' || x.route === route) &&
        (x.method === undefined || x.method.toUpperCase() === method) &&
        (x.count === undefined || x.count > 0) &&
        Math.random() < (x.rate ?? 1),
    );
    if (f && f.count !== undefined) f.count--;
    return f;
  }

  // ---- admin -----------------------------------------------------------------------------

  const admin: SimulatorAdmin = {
    setFaults(f) {
      faults = { ...faults, ...f };
    },
    clearFaults() {
      faults = emptyFaults();
    },
    faults: () => faults,
    stats: () => ({ ...stats }),
    server(id) {
      const s = servers.get(id);
      return s && !s.deleted ? serverJson(s) : undefined;
    },
    setStuckInStarting(id, stuck) {
      const s = servers.get(id);
      if (!s) throw new Error(`no server ${id}`);
      s.stuckStarting = stuck;
    },
    setActionDuration(d) {
      actionDuration = d;
    },
    bucket(tok) {
      return buckets.has(tok) ? bucketOf(tok).tokens : undefined;
    },
    clearRequests() {
      requests.length = 0;
    },
  };

  async function handleAdmin(method: string, path: string, body: unknown): Promise<[number, unknown]> {
    if (path === '/__admin/faults' && method === 'GET') return [200, faults];
    if (path === '/__admin/faults' && (method === 'POST' || method === 'PUT')) {
      if (!Value.Check(FaultsBody, body)) {
        const first = Value.Errors(FaultsBody, body).First();
        throw invalid(`faults: ${first?.path ?? ''} ${first?.message ?? 'invalid'}`);
      }
      if (method === 'PUT') admin.clearFaults();
      admin.setFaults(body);
      return [200, faults];
    }
    if (path === '/__admin/faults' && method === 'DELETE') {
      admin.clearFaults();
      return [200, faults];
    }
    if (path === '/__admin/requests' && method === 'GET') return [200, { requests }];
    if (path === '/__admin/requests' && method === 'DELETE') {
      admin.clearRequests();
      return [200, {}];
    }
    if (path === '/__admin/stats' && method === 'GET') return [200, stats];
    if (path === '/__admin/action-duration' && method === 'POST') {
      const b = obj(body);
      const ms = b['ms'];
      if (typeof ms === 'number') admin.setActionDuration(ms);
      else if (ms && typeof ms === 'object')
        admin.setActionDuration(
          Object.fromEntries(
            Object.entries(ms).filter((e): e is [string, number] => typeof e[1] === 'number'),
          ),
        );
      else throw invalid('ms must be a number or a map of command to number');
      return [200, {}];
    }
    const m = /^\/__admin\/servers\/(\d+)\/stuck$/.exec(path);
    if (m && method === 'POST') {
      admin.setStuckInStarting(Number(m[1]), obj(body)['stuck'] !== false);
      return [200, {}];
    }
    return [404, { error: { code: 'not_found', message: 'no such admin endpoint', details: null } }];
  }

  // ---- HTTP ------------------------------------------------------------------------------

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(typeof c === 'string' ? Buffer.from(c) : c);
    const raw = Buffer.concat(chunks).toString('utf8');
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://sim');
    const headers: Record<string, string> = {
      'Content-Type': 'application/json',
      'X-Correlation-Id': randomBytes(8).toString('hex'),
    };
    let status = 200;
    let payload: unknown;
    let route = '';

    const send = () => {
      // Bounded, so a long `make sim` or `make dev` run does not grow without end.
      if (requests.length >= maxRecorded) requests.splice(0, requests.length - maxRecorded + 1);
      requests.push({
        at: new Date().toISOString(),
        method,
        url: req.url ?? '',
        headers: { ...req.headers },
        body: raw,
        status,
        route,
      });
      if (status === 204) {
        delete headers['Content-Type'];
        res.writeHead(status, headers).end();
      } else res.writeHead(status, headers).end(`${JSON.stringify(payload)}\n`);
    };
    const fail = (e: ApiError) => {
      status = STATUS_OF[e.code] ?? 500;
      payload = { error: { code: e.code, message: e.message, details: e.details } };
    };

    if (url.pathname.startsWith('/__admin/')) {
      route = url.pathname;
      let body: unknown;
      try {
        body = raw ? JSON.parse(raw) : undefined;
        [status, payload] = await handleAdmin(method, url.pathname, body);
      } catch (e) {
        fail(e instanceof ApiError ? e : new ApiError('json_error', 'invalid JSON'));
      }
      return send();
    }

    stats.requests++;
    try {
      if (!url.pathname.startsWith('/v1/')) throw new ApiError('not_found', 'not found');
      const path = url.pathname.slice(3).replace(/\/+$/, '');
      const auth = req.headers.authorization ?? '';
      const tok = auth.startsWith('Bearer ') ? auth.slice(7).trim() : '';
      if (!tokens.has(tok)) throw new ApiError('unauthorized', 'unable to authenticate');
      Object.assign(headers, rateHeaders(tok));

      // Rate limit: every authenticated request costs one token of its bucket.
      if (faults.rateLimitStorm > 0) {
        faults.rateLimitStorm--;
        stats.refusedByStorm++;
        throw new ApiError('rate_limit_exceeded', 'limit of 3600 requests per hour reached');
      }
      const b = bucketOf(tok);
      if (b.tokens < 1) {
        stats.refusedByBucket++;
        throw new ApiError('rate_limit_exceeded', `limit of ${limit} requests per hour reached`);
      }
      b.tokens -= 1;
      Object.assign(headers, rateHeaders(tok));

      let found: { handler: Handler; params: Record<string, string> } | undefined;
      let pathMatched = false;
      for (const r of compiled) {
        const m = r.re.exec(path);
        if (!m) continue;
        pathMatched = true;
        if (r.method !== method) continue;
        route = r.template;
        found = { handler: r.handler, params: { ...m.groups } };
        break;
      }
      if (!found) {
        if (pathMatched) throw new ApiError('method_not_allowed', 'method not allowed');
        throw new ApiError('not_found', 'not found');
      }
      if (faults.latencyMs > 0) await sleep(faults.latencyMs);
      const injected = takeErrorFault(method, route);
      if (injected) {
        stats.injectedErrors++;
        throw new ApiError(injected.code, `injected ${injected.code}`);
      }
      let body: unknown;
      if (raw.trim() !== '') {
        try {
          body = JSON.parse(raw);
        } catch {
          throw new ApiError('json_error', 'invalid JSON in request body');
        }
      }
      [status, payload] = await found.handler({
        params: found.params,
        query: url.searchParams,
        body,
        token: tok,
        readonly: readonlyTokens.has(tok),
      });
    } catch (e) {
      if (e instanceof ApiError) fail(e);
      else {
        fail(new ApiError('server_error', 'internal simulator error'));
        console.error('hcloud-sim: handler failed', e);
      }
    }
    send();
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      console.error('hcloud-sim: request failed', e);
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('simulator: no TCP address');
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;

  return {
    url,
    endpoint: `${url}/v1`,
    token: new Secret(token),
    admin,
    provider,
    requests,
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (opts.closeProvider !== false) await provider.close();
    },
  };
}
