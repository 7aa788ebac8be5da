import { createHash } from 'node:crypto';
/**
 * The operator's only way to Hetzner Cloud: a small typed client on fetch (undici).
 *
 * - The client holds NO token: each call takes the token as a `Secret`, so one Vps's token
 *   can never serve another's request by accident. The token is unwrapped at one line
 *   (the Authorization header).
 * - Every response is checked against a schema (types.ts) before it is returned.
 * - Every request first takes a token from the per-API-token budget (budget.ts), then is
 *   sent; failures are classified in errors.ts (the one place deciding retry vs terminal)
 *   and retried with full-jitter exponential backoff like hcloud-go (1 s base, 60 s cap).
 * - Metrics use the route template as `endpoint`, never a path with ids.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { Registry } from 'prom-client';
import { TerminalError } from '../../common/errors.ts';
import { Secret } from '../../common/secret.ts';
import { cancelSignal, detached, onCancel } from '../lib/cancel.ts';
import type { Logger } from '../lib/log.ts';
import { type BudgetOptions, BudgetRegistry } from './budget.ts';
import { HcloudError } from './errors.ts';
import { createHcloudMetrics, type HcloudMetrics } from './metrics.ts';
import { HETZNER_ACTION_PRIORS_MS, PollSchedule } from './poll-schedule.ts';
import {
  type Action,
  ActionListResponse,
  ActionResponse,
  type CreateServerRequest,
  CreateServerResponse,
  EnableRescueResponse,
  ErrorBody,
  type Image,
  ImageListResponse,
  type ListOptions,
  type Location,
  LocationListResponse,
  OptionalActionResponse,
  type Page,
  type Pagination,
  type Server,
  ServerListResponse,
  ServerResponse,
  type ServerType,
  ServerTypeListResponse,
  type SshKey,
  SshKeyListResponse,
  SshKeyResponse,
} from './types.ts';

export const DEFAULT_ENDPOINT = 'https://api.hetzner.cloud/v1';

export interface RetryOptions {
  /** First backoff ceiling. Default 1000 ms (hcloud-go). */
  baseMs?: number;
  /** Backoff ceiling cap. Default 60 000 ms. */
  capMs?: number;
  /** Resends after the first try. Default 5. */
  maxRetries?: number;
  /** Source of jitter in [0, 1). */
  random?: () => number;
}

export interface PollOptions {
  /**
   * The first poll of a command this client has not yet seen finish (an action a POST just
   * returned as running is not done a millisecond later: polling at once is a call wasted), and
   * the shortest interval. Default 1000 ms. When to poll: poll-schedule.ts.
   */
  initialMs?: number;
  /** Without a prior or anything learned, intervals grow by this factor... Default 1.5. */
  factor?: number;
  /** ...up to this (also the longest interval after a learned or prior guess). Default 10 000 ms. */
  maxMs?: number;
  /** The first guess of each command's duration. Default HETZNER_ACTION_PRIORS_MS. */
  priorMs?: Readonly<Record<string, number>>;
  /** Give up waiting after this long. Default 15 minutes. */
  timeoutMs?: number;
  /**
   * Polls of every waiter (every reconcile waiting on an action, same token) that fall due
   * within this window are sent as one `GET /actions?id=..&id=..`. Default 500 ms.
   */
  batchMs?: number;
}

/** One `GET /actions` being gathered: the ids every waiter due in the window asked for. */
interface PollBatch {
  readonly ids: Set<number>;
  readonly result: Promise<Map<number, Action>>;
}

export interface HcloudClientOptions {
  /** API base including `/v1`. Default the real API; the operator reads HCLOUD_ENDPOINT. */
  endpoint?: string;
  fetch?: typeof fetch;
  /** Metrics go here (a fresh private registry when absent)... */
  registry?: Registry;
  /** ...or into these, when several clients share one registry. */
  metrics?: HcloudMetrics;
  /** Per-request timeout. Default 30 s. */
  timeoutMs?: number;
  retry?: RetryOptions;
  budget?: BudgetOptions;
  poll?: PollOptions;
  sleep?: (ms: number) => Promise<void>;
  userAgent?: string;
  /**
   * Allow plain http to a non-loopback host (a simulator inside a test cluster). Off by
   * default: the token would travel in clear text.
   */
  allowInsecureHttp?: boolean;
  /** Retries are logged at debug, with route template, reason and correlation id only. */
  logger?: Logger;
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
type Query = Record<string, string | number | boolean | readonly (string | number)[] | undefined>;

interface RequestSpec<T extends TSchema> {
  method: Method;
  /** Route template; `{name}` placeholders are filled from `params`. */
  route: string;
  params?: Record<string, number | string>;
  query?: Query;
  body?: unknown;
  schema: T;
  /** Sending it twice does no harm (decides retries on ambiguous failures). */
  idempotent: boolean;
}

/** Sleeps, unless the current reconcile is cancelled first (then `Cancelled`). */
const defaultSleep = async (ms: number) => {
  const c = onCancel();
  try {
    await Promise.race([new Promise<void>((resolve) => setTimeout(resolve, ms)), c.promise]);
  } finally {
    c.dispose();
  }
};

function withTimeout(ms: number): AbortSignal {
  const s = cancelSignal();
  return s ? AbortSignal.any([AbortSignal.timeout(ms), s]) : AbortSignal.timeout(ms);
}

export class HcloudClient {
  readonly #endpoint: string;
  readonly #fetch: typeof fetch;
  readonly #metrics: HcloudMetrics;
  readonly #timeoutMs: number;
  readonly #retry: Required<RetryOptions>;
  readonly #poll: Required<PollOptions>;
  /** What this client learned of each command's duration (shared by every waiter). */
  readonly #schedule: PollSchedule;
  readonly #budgets: BudgetRegistry;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #userAgent: string;
  readonly #logger: Logger | undefined;

  constructor(opts: HcloudClientOptions = {}) {
    this.#endpoint = checkEndpoint(opts.endpoint ?? DEFAULT_ENDPOINT, opts.allowInsecureHttp ?? false);
    this.#fetch = opts.fetch ?? globalThis.fetch;
    this.#metrics = opts.metrics ?? createHcloudMetrics(opts.registry ?? new Registry());
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#retry = {
      baseMs: opts.retry?.baseMs ?? 1000,
      capMs: opts.retry?.capMs ?? 60_000,
      maxRetries: opts.retry?.maxRetries ?? 5,
      random: opts.retry?.random ?? Math.random,
    };
    this.#poll = {
      initialMs: opts.poll?.initialMs ?? 1000,
      factor: opts.poll?.factor ?? 1.5,
      maxMs: opts.poll?.maxMs ?? 10_000,
      timeoutMs: opts.poll?.timeoutMs ?? 15 * 60_000,
      batchMs: opts.poll?.batchMs ?? 500,
      priorMs: opts.poll?.priorMs ?? HETZNER_ACTION_PRIORS_MS,
    };
    this.#schedule = new PollSchedule(this.#poll);
    this.#budgets = new BudgetRegistry(opts.budget);
    this.#sleep = opts.sleep ?? defaultSleep;
    this.#userAgent = opts.userAgent ?? 'cannes-operator';
    this.#logger = opts.logger;
  }

  // ---- servers -------------------------------------------------------------------------

  /** POST /servers. Not retried on ambiguous failures (a resend could make a duplicate). */
  async createServer(
    token: Secret<string>,
    req: CreateServerRequest,
  ): Promise<{ server: Server; action: Action; nextActions: Action[]; rootPassword: Secret<string> | null }> {
    const r = await this.#request(token, {
      method: 'POST',
      route: '/servers',
      body: req,
      schema: CreateServerResponse,
      idempotent: false,
    });
    return {
      server: r.server,
      action: r.action,
      nextActions: r.next_actions,
      rootPassword: r.root_password === null ? null : new Secret(r.root_password),
    };
  }

  async getServer(token: Secret<string>, id: number): Promise<Server> {
    const r = await this.#request(token, {
      method: 'GET',
      route: '/servers/{id}',
      params: { id },
      schema: ServerResponse,
      idempotent: true,
    });
    return r.server;
  }

  /** One page of GET /servers. */
  async listServers(token: Secret<string>, opts: ListOptions = {}): Promise<Page<Server>> {
    const r = await this.#request(token, {
      method: 'GET',
      route: '/servers',
      query: listQuery(opts),
      schema: ServerListResponse,
      idempotent: true,
    });
    return { items: r.servers, pagination: r.meta.pagination };
  }

  /** Every page of GET /servers. */
  async listAllServers(token: Secret<string>, opts: Omit<ListOptions, 'page'> = {}): Promise<Server[]> {
    return allPages((page) => this.listServers(token, { ...opts, page, perPage: opts.perPage ?? 50 }));
  }

  /** PUT /servers/{id}: rename and/or replace the labels (the whole set). */
  async updateServer(
    token: Secret<string>,
    id: number,
    update: { name?: string; labels?: Record<string, string> },
  ): Promise<Server> {
    const r = await this.#request(token, {
      method: 'PUT',
      route: '/servers/{id}',
      params: { id },
      body: update,
      schema: ServerResponse,
      idempotent: true,
    });
    return r.server;
  }

  async deleteServer(token: Secret<string>, id: number): Promise<Action | undefined> {
    const r = await this.#request(token, {
      method: 'DELETE',
      route: '/servers/{id}',
      params: { id },
      schema: OptionalActionResponse,
      idempotent: true,
    });
    return r.action;
  }

  powerOn(token: Secret<string>, id: number): Promise<Action> {
    return this.#serverAction(token, id, 'poweron');
  }
  powerOff(token: Secret<string>, id: number): Promise<Action> {
    return this.#serverAction(token, id, 'poweroff');
  }
  shutdown(token: Secret<string>, id: number): Promise<Action> {
    return this.#serverAction(token, id, 'shutdown');
  }
  reset(token: Secret<string>, id: number): Promise<Action> {
    return this.#serverAction(token, id, 'reset');
  }
  reboot(token: Secret<string>, id: number): Promise<Action> {
    return this.#serverAction(token, id, 'reboot');
  }
  disableRescue(token: Secret<string>, id: number): Promise<Action> {
    return this.#serverAction(token, id, 'disable_rescue');
  }

  /** Enables rescue for the next boot; the one-time root password comes back as a Secret. */
  async enableRescue(
    token: Secret<string>,
    id: number,
    opts: { sshKeys?: number[] } = {},
  ): Promise<{ action: Action; rootPassword: Secret<string> }> {
    const body: { type: 'linux64'; ssh_keys?: number[] } = { type: 'linux64' };
    if (opts.sshKeys) body.ssh_keys = opts.sshKeys;
    const r = await this.#request(token, {
      method: 'POST',
      route: '/servers/{id}/actions/enable_rescue',
      params: { id },
      body,
      schema: EnableRescueResponse,
      idempotent: true,
    });
    return { action: r.action, rootPassword: new Secret(r.root_password) };
  }

  async #serverAction(token: Secret<string>, id: number, command: string): Promise<Action> {
    const r = await this.#request(token, {
      method: 'POST',
      route: `/servers/{id}/actions/${command}`,
      params: { id },
      schema: ActionResponse,
      // State-setting commands: a second poweron/reset is harmless.
      idempotent: true,
    });
    return r.action;
  }

  // ---- actions -------------------------------------------------------------------------

  async getAction(token: Secret<string>, id: number): Promise<Action> {
    const r = await this.#request(token, {
      method: 'GET',
      route: '/actions/{id}',
      params: { id },
      schema: ActionResponse,
      idempotent: true,
    });
    return r.action;
  }

  /** GET /actions?id=..&id=.. (at most 25 ids per request, like hcloud-go). */
  async getActions(token: Secret<string>, ids: readonly number[]): Promise<Action[]> {
    const out: Action[] = [];
    for (let i = 0; i < ids.length; i += 25) {
      const chunk = ids.slice(i, i + 25);
      const r = await this.#request(token, {
        method: 'GET',
        route: '/actions',
        query: { id: chunk, per_page: 50 },
        schema: ActionListResponse,
        idempotent: true,
      });
      out.push(...r.actions);
    }
    return out;
  }

  /** Batches being gathered, by token (a hash of it: the map outlives no request). */
  readonly #batches = new Map<string, PollBatch>();

  /**
   * The actions `ids` as one shared poll: joins the batch of this token that is gathering, or
   * opens one that sends after `batchMs`. One failed request fails every waiter in it (each
   * retries on its own, like any failed poll).
   */
  async #pollBatched(token: Secret<string>, ids: readonly number[]): Promise<Action[]> {
    const key = createHash('sha256').update(token.reveal()).digest('hex');
    let batch = this.#batches.get(key);
    if (!batch) {
      const gathered = new Set<number>();
      const result = detached(async () => {
        await this.#sleep(this.#poll.batchMs);
        this.#batches.delete(key);
        const got = await this.getActions(token, [...gathered]);
        return new Map(got.map((a) => [a.id, a]));
      });
      result.catch(() => {});
      batch = { ids: gathered, result };
      this.#batches.set(key, batch);
    }
    for (const id of ids) batch.ids.add(id);
    // This waiter's own cancellation still ends its wait (not the shared request).
    const c = onCancel();
    let all: Map<number, Action>;
    try {
      all = await Promise.race([batch.result, c.promise]);
    } finally {
      c.dispose();
    }
    return ids.flatMap((id) => {
      const a = all.get(id);
      return a ? [a] : [];
    });
  }

  /**
   * Wait until every action finished, polling them together on the learned schedule
   * (poll-schedule.ts): typically one poll per action, shared with every other waiter.
   * Throws `HcloudActionFailed` (with the action's own error code in `actionError`) when one
   * ended in `error`, `HcloudActionTimeout` when they are still running after the timeout.
   */
  async waitForActions(
    token: Secret<string>,
    actions: readonly (Action | number)[],
    opts: { timeoutMs?: number } = {},
  ): Promise<Action[]> {
    const timeoutMs = opts.timeoutMs ?? this.#poll.timeoutMs;
    const started = Date.now();
    const done = new Map<number, Action>();
    const commands = new Map<number, string>();
    let pending: number[] = [];
    for (const a of actions) {
      if (typeof a === 'number') pending.push(a);
      else if (a.status === 'running') {
        pending.push(a.id);
        commands.set(a.id, a.command);
      } else done.set(a.id, a);
    }
    let polls = 0;
    while (pending.length > 0) {
      const elapsed = Date.now() - started;
      const at = this.#schedule.nextPollAt(
        pending.map((id) => commands.get(id) ?? ''),
        polls,
        elapsed,
      );
      await this.#sleep(Math.max(0, at - elapsed));
      const got = await this.#pollBatched(token, pending);
      polls++;
      const missing = pending.find((id) => !got.some((a) => a.id === id));
      if (missing !== undefined)
        throw new HcloudError('not_found', `action ${missing} not found`, { actionId: missing });
      for (const a of got) {
        commands.set(a.id, a.command);
        if (a.status === 'running') continue;
        done.set(a.id, a);
        const took = Date.now() - started;
        this.#metrics.actionWait.observe({ command: a.command, status: a.status }, took / 1000);
        if (a.status === 'success') this.#schedule.observe(a.command, polls, took);
      }
      pending = pending.filter((id) => !done.has(id));
      if (pending.length === 0) break;
      if (Date.now() - started > timeoutMs) {
        const cmd = commands.get(pending[0]!) ?? 'action';
        throw new HcloudError('action_timeout', `${cmd} ${pending[0]} still running after ${timeoutMs} ms`, {
          actionId: pending[0]!,
        });
      }
    }
    const result = actions.map((a) => done.get(typeof a === 'number' ? a : a.id)!);
    const failed = result.find((a) => a.status === 'error');
    if (failed) {
      const e = failed.error ?? { code: 'action_failed', message: 'action failed' };
      throw new HcloudError(
        'action_failed',
        `${failed.command} ${failed.id} failed: ${e.code}: ${e.message}`,
        {
          actionId: failed.id,
          actionError: { code: e.code, message: e.message },
        },
      );
    }
    return result;
  }

  // ---- lookups (the operator makes none: the simulator's fidelity tests use them) ----------

  async listServerTypes(token: Secret<string>, opts: { name?: string } = {}): Promise<ServerType[]> {
    return allPages(async (page) => {
      const r = await this.#request(token, {
        method: 'GET',
        route: '/server_types',
        query: { name: opts.name, page, per_page: 50 },
        schema: ServerTypeListResponse,
        idempotent: true,
      });
      return { items: r.server_types, pagination: r.meta.pagination };
    });
  }

  async listLocations(token: Secret<string>, opts: { name?: string } = {}): Promise<Location[]> {
    return allPages(async (page) => {
      const r = await this.#request(token, {
        method: 'GET',
        route: '/locations',
        query: { name: opts.name, page, per_page: 50 },
        schema: LocationListResponse,
        idempotent: true,
      });
      return { items: r.locations, pagination: r.meta.pagination };
    });
  }

  async listImages(
    token: Secret<string>,
    opts: { name?: string; architecture?: string; type?: string; labelSelector?: string } = {},
  ): Promise<Image[]> {
    return allPages(async (page) => {
      const r = await this.#request(token, {
        method: 'GET',
        route: '/images',
        query: {
          name: opts.name,
          architecture: opts.architecture,
          type: opts.type,
          label_selector: opts.labelSelector,
          page,
          per_page: 50,
        },
        schema: ImageListResponse,
        idempotent: true,
      });
      return { items: r.images, pagination: r.meta.pagination };
    });
  }

  // ---- SSH keys ------------------------------------------------------------------------

  async createSshKey(
    token: Secret<string>,
    req: { name: string; public_key: string; labels?: Record<string, string> },
  ): Promise<SshKey> {
    const r = await this.#request(token, {
      method: 'POST',
      route: '/ssh_keys',
      body: req,
      schema: SshKeyResponse,
      idempotent: false,
    });
    return r.ssh_key;
  }

  async listSshKeys(
    token: Secret<string>,
    opts: { name?: string; labelSelector?: string } = {},
  ): Promise<SshKey[]> {
    return allPages(async (page) => {
      const r = await this.#request(token, {
        method: 'GET',
        route: '/ssh_keys',
        query: { name: opts.name, label_selector: opts.labelSelector, page, per_page: 50 },
        schema: SshKeyListResponse,
        idempotent: true,
      });
      return { items: r.ssh_keys, pagination: r.meta.pagination };
    });
  }

  async deleteSshKey(token: Secret<string>, id: number): Promise<void> {
    await this.#requestRaw(token, {
      method: 'DELETE',
      route: '/ssh_keys/{id}',
      params: { id },
      idempotent: true,
    });
  }

  // ---- the one request path ------------------------------------------------------------

  async #request<T extends TSchema>(token: Secret<string>, spec: RequestSpec<T>): Promise<Static<T>> {
    const body = await this.#requestRaw(token, spec);
    let json: unknown;
    try {
      json = JSON.parse(body.text);
    } catch (cause) {
      throw new HcloudError('bad_response', `${spec.method} ${spec.route}: response is not JSON`, {
        status: body.status,
        endpoint: spec.route,
        correlationId: body.correlationId,
        cause,
      });
    }
    if (!Value.Check(spec.schema, json)) {
      const first = Value.Errors(spec.schema, json).First();
      throw new HcloudError(
        'bad_response',
        `${spec.method} ${spec.route}: unexpected response shape at ${first?.path ?? '/'}: ${first?.message ?? ''}`,
        { status: body.status, endpoint: spec.route, correlationId: body.correlationId },
      );
    }
    return json;
  }

  async #requestRaw(
    token: Secret<string>,
    spec: Omit<RequestSpec<TSchema>, 'schema'>,
  ): Promise<{ status: number; text: string; correlationId: string | undefined }> {
    const url = this.#endpoint + fillRoute(spec.route, spec.params ?? {}) + queryString(spec.query ?? {});
    const { id: budgetId, budget } = this.#budgets.for(token);
    for (let attempt = 0; ; attempt++) {
      const waited = await budget.acquire(this.#sleep);
      this.#metrics.budgetWait.observe(waited / 1000);
      let err: HcloudError;
      const endTimer = this.#metrics.requestDuration.startTimer({
        endpoint: spec.route,
        method: spec.method,
      });
      try {
        const headers: Record<string, string> = {
          accept: 'application/json',
          'user-agent': this.#userAgent,
          authorization: `Bearer ${token.reveal()}`,
        };
        if (spec.body !== undefined) headers['content-type'] = 'application/json';
        const res = await this.#fetch(url, {
          method: spec.method,
          headers,
          body: spec.body === undefined ? null : JSON.stringify(spec.body),
          redirect: 'error',
          // The reconcile's cancellation too (operator/lib/cancel.ts): a lost lease stops the request.
          signal: withTimeout(this.#timeoutMs),
        });
        const text = await res.text();
        endTimer();
        const remaining = intHeader(res.headers, 'ratelimit-remaining');
        budget.settle({
          limit: intHeader(res.headers, 'ratelimit-limit'),
          remaining,
          reset: intHeader(res.headers, 'ratelimit-reset'),
          refused: res.status === 429,
        });
        if (remaining !== undefined) this.#metrics.rateLimitRemaining.set({ budget: budgetId }, remaining);
        this.#metrics.requests.inc({ endpoint: spec.route, method: spec.method, code: String(res.status) });
        const correlationId = res.headers.get('x-correlation-id') ?? undefined;
        if (res.ok) return { status: res.status, text, correlationId };
        err = errorFrom(res.status, text, spec.route, correlationId);
      } catch (cause) {
        endTimer();
        budget.settle({});
        this.#metrics.requests.inc({ endpoint: spec.route, method: spec.method, code: '0' });
        const timedOut =
          cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
        // Only the error's name goes in the message: undici's messages are safe, but a
        // cause chain is kept for debugging rather than stringified into conditions.
        err = new HcloudError(
          timedOut ? 'request_timeout' : 'network_error',
          `${spec.method} ${spec.route}: ${timedOut ? `no response within ${this.#timeoutMs} ms` : 'request failed'}`,
          { endpoint: spec.route, cause },
        );
      }
      if (attempt >= this.#retry.maxRetries || !err.retryable(spec.idempotent)) throw err;
      this.#metrics.retries.inc({ endpoint: spec.route, reason: err.reason });
      const delay = backoff(attempt, this.#retry);
      this.#logger?.debug(
        {
          endpoint: spec.route,
          method: spec.method,
          reason: err.reason,
          correlationId: err.correlationId,
          attempt,
          delay,
        },
        'hcloud request retried',
      );
      await this.#sleep(delay);
    }
  }
}

/**
 * The token travels in every request, so the endpoint must be https; plain http is allowed
 * only to a loopback address (the simulator).
 */
export function checkEndpoint(endpoint: string, allowInsecureHttp = false): string {
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    throw new TerminalError('HcloudInvalidEndpoint', 'HCLOUD_ENDPOINT is not a URL');
  }
  const loopback =
    u.hostname === 'localhost' || u.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(u.hostname);
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && (loopback || allowInsecureHttp)))
    throw new TerminalError(
      'HcloudInvalidEndpoint',
      `HCLOUD_ENDPOINT must be https (plain http only to loopback), got ${u.protocol}//${u.host}`,
    );
  if (u.username || u.password || u.search || u.hash)
    throw new TerminalError(
      'HcloudInvalidEndpoint',
      'HCLOUD_ENDPOINT must not carry credentials, a query or a fragment',
    );
  return u.href.replace(/\/+$/, '');
}

/** The client's public surface, for fakes (the controllers' own port is controllers/ports.ts `Hcloud`). */
export type HcloudApi = Pick<HcloudClient, keyof HcloudClient>;

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)). */
export function backoff(attempt: number, r: Required<RetryOptions>): number {
  return r.random() * Math.min(r.capMs, r.baseMs * 2 ** attempt);
}

function errorFrom(
  status: number,
  text: string,
  endpoint: string,
  correlationId: string | undefined,
): HcloudError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (Value.Check(ErrorBody, parsed)) {
    return new HcloudError(parsed.error.code, `${endpoint}: ${parsed.error.code}: ${parsed.error.message}`, {
      status,
      endpoint,
      correlationId,
    });
  }
  const code = status === 429 ? 'rate_limit_exceeded' : status >= 500 ? 'server_error' : `http_${status}`;
  return new HcloudError(code, `${endpoint}: HTTP ${status} without an error body`, {
    status,
    endpoint,
    correlationId,
  });
}

function intHeader(h: Headers, name: string): number | undefined {
  const v = h.get(name);
  if (v === null || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

function fillRoute(route: string, params: Record<string, number | string>): string {
  return route.replace(/\{(\w+)\}/g, (_, k: string) => {
    const v = params[k];
    if (v === undefined) throw new Error(`missing route parameter ${k} for ${route}`);
    return encodeURIComponent(String(v));
  });
}

function queryString(q: Query): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) sp.append(k, String(x));
    else sp.append(k, String(v));
  }
  const s = sp.toString();
  return s ? `?${s}` : '';
}

function listQuery(o: ListOptions): Query {
  return {
    name: o.name,
    label_selector: o.labelSelector,
    status: o.status,
    sort: o.sort,
    page: o.page,
    per_page: o.perPage,
  };
}

async function allPages<T>(
  get: (page: number) => Promise<{ items: T[]; pagination: Pagination }>,
): Promise<T[]> {
  const out: T[] = [];
  let page: number | null = 1;
  while (page !== null) {
    const r = await get(page);
    out.push(...r.items);
    page = r.pagination.next_page;
  }
  return out;
}
