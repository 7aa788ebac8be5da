import { CannesError } from '../../common/errors.ts';

/**
 * Every Hetzner error code we know, and what it means for us. This table is the ONE place
 * that decides retryable vs terminal:
 * - `retry: 'always'`: Hetzner refused the request before doing anything (rate limit, a
 *   running action holds the lock, a conflicting change): resending is always safe.
 * - `retry: 'idempotent'`: the outcome is unknown (server error, gateway timeout): resent
 *   only when sending twice does no harm (everything but creating a server or SSH key,
 *   where a second try could make a duplicate; the reconciler finds the first by label).
 * - `retry: 'never'`: the answer is final for this request.
 * `terminal: true` means the user must change something (spec, token, project limits).
 */
interface CodeInfo {
  readonly reason: string;
  readonly retry: 'always' | 'idempotent' | 'never';
  readonly terminal: boolean;
}

export const HCLOUD_ERROR_CODES: Readonly<Record<string, CodeInfo>> = {
  rate_limit_exceeded: { reason: 'HcloudRateLimited', retry: 'always', terminal: false },
  locked: { reason: 'HcloudLocked', retry: 'always', terminal: false },
  conflict: { reason: 'HcloudConflict', retry: 'always', terminal: false },
  server_error: { reason: 'HcloudServerError', retry: 'idempotent', terminal: false },
  service_error: { reason: 'HcloudServiceError', retry: 'idempotent', terminal: false },
  unavailable: { reason: 'HcloudUnavailable', retry: 'idempotent', terminal: false },
  maintenance: { reason: 'HcloudMaintenance', retry: 'idempotent', terminal: false },
  timeout: { reason: 'HcloudTimeout', retry: 'idempotent', terminal: false },
  not_found: { reason: 'HcloudNotFound', retry: 'never', terminal: false },
  uniqueness_error: { reason: 'HcloudUniquenessError', retry: 'never', terminal: false },
  resource_unavailable: { reason: 'HcloudResourceUnavailable', retry: 'never', terminal: false },
  invalid_input: { reason: 'HcloudInvalidInput', retry: 'never', terminal: true },
  json_error: { reason: 'HcloudJsonError', retry: 'never', terminal: true },
  unauthorized: { reason: 'HcloudUnauthorized', retry: 'never', terminal: true },
  token_readonly: { reason: 'HcloudTokenReadonly', retry: 'never', terminal: true },
  forbidden: { reason: 'HcloudForbidden', retry: 'never', terminal: true },
  resource_limit_exceeded: { reason: 'HcloudResourceLimitExceeded', retry: 'never', terminal: true },
  protected: { reason: 'HcloudProtected', retry: 'never', terminal: true },
  unsupported_error: { reason: 'HcloudUnsupported', retry: 'never', terminal: true },
  // Server-specific codes hcloud-go knows.
  unknown_error: { reason: 'HcloudUnknownError', retry: 'idempotent', terminal: false },
  placement_error: { reason: 'HcloudPlacementError', retry: 'never', terminal: false },
  no_space_left_in_location: { reason: 'HcloudNoSpaceLeftInLocation', retry: 'never', terminal: false },
  server_not_stopped: { reason: 'HcloudServerNotStopped', retry: 'never', terminal: false },
  invalid_server_type: { reason: 'HcloudInvalidServerType', retry: 'never', terminal: true },
  deprecated_api_endpoint: { reason: 'HcloudDeprecatedApiEndpoint', retry: 'never', terminal: true },
};

/** Errors raised by the client itself (no Hetzner error body). */
const LOCAL: Readonly<Record<string, CodeInfo>> = {
  network_error: { reason: 'HcloudNetworkError', retry: 'idempotent', terminal: false },
  request_timeout: { reason: 'HcloudRequestTimeout', retry: 'idempotent', terminal: false },
  bad_response: { reason: 'HcloudBadResponse', retry: 'idempotent', terminal: false },
  action_failed: { reason: 'HcloudActionFailed', retry: 'never', terminal: false },
  action_timeout: { reason: 'HcloudActionTimeout', retry: 'never', terminal: false },
};

function infoFor(code: string, status: number): CodeInfo {
  const known = HCLOUD_ERROR_CODES[code] ?? LOCAL[code];
  if (known) return known;
  // An unknown code: judge by status class. 5xx may be transient; 4xx is about our request.
  if (status === 429) return HCLOUD_ERROR_CODES['rate_limit_exceeded']!;
  if (status >= 500) return { reason: 'HcloudServerError', retry: 'idempotent', terminal: false };
  return { reason: 'HcloudRequestFailed', retry: 'never', terminal: false };
}

export class HcloudError extends CannesError {
  /** Hetzner's `error.code` (or one of the client's own: network_error, action_failed...). */
  readonly code: string;
  /** HTTP status, 0 when no response arrived. */
  readonly status: number;
  /** Route template, never with ids (`/servers/{id}/actions/reset`). */
  readonly endpoint: string;
  readonly correlationId: string | undefined;
  /** For action failures: the failed action's id and its own error (e.g. `action_failed`). */
  readonly actionId: number | undefined;
  readonly actionError: { readonly code: string; readonly message: string } | undefined;
  readonly #retry: CodeInfo['retry'];

  constructor(
    code: string,
    message: string,
    opts: {
      status?: number;
      endpoint?: string;
      correlationId?: string | undefined;
      actionId?: number;
      actionError?: { code: string; message: string };
      cause?: unknown;
    } = {},
  ) {
    const status = opts.status ?? 0;
    const info = infoFor(code, status);
    super(info.reason, message, { terminal: info.terminal, cause: opts.cause });
    this.name = 'HcloudError';
    this.code = code;
    this.status = status;
    this.endpoint = opts.endpoint ?? '';
    this.correlationId = opts.correlationId;
    this.actionId = opts.actionId;
    this.actionError = opts.actionError;
    this.#retry = info.retry;
  }

  /** May the client resend this request? `idempotent`: sending it twice does no harm. */
  retryable(idempotent: boolean): boolean {
    return this.#retry === 'always' || (this.#retry === 'idempotent' && idempotent);
  }
}

export function isHcloudError(err: unknown, code?: string): err is HcloudError {
  return err instanceof HcloudError && (code === undefined || err.code === code);
}
