import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * Every Hetzner-client metric, in one place. `endpoint` is always a route template
 * (`/servers/{id}/actions/reset`), never a path with ids in it, and `budget` is a hash
 * prefix of the token (budget.ts `tokenId`), never the token.
 */
export interface HcloudMetrics {
  requests: Counter<'endpoint' | 'method' | 'code'>;
  requestDuration: Histogram<'endpoint' | 'method'>;
  retries: Counter<'endpoint' | 'reason'>;
  rateLimitRemaining: Gauge<'budget'>;
  budgetWait: Histogram<never>;
  actionWait: Histogram<'command' | 'status'>;
}

export function createHcloudMetrics(registry: Registry): HcloudMetrics {
  const registers = [registry];
  return {
    requests: new Counter({
      name: 'cannes_hcloud_requests_total',
      help: 'Hetzner Cloud API requests by route template, method and HTTP status (0: no response)',
      labelNames: ['endpoint', 'method', 'code'] as const,
      registers,
    }),
    requestDuration: new Histogram({
      name: 'cannes_hcloud_request_duration_seconds',
      help: 'Hetzner Cloud API request latency (one HTTP exchange, without budget waits)',
      labelNames: ['endpoint', 'method'] as const,
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    retries: new Counter({
      name: 'cannes_hcloud_retries_total',
      help: 'Hetzner Cloud API requests resent, by route template and error reason',
      labelNames: ['endpoint', 'reason'] as const,
      registers,
    }),
    rateLimitRemaining: new Gauge({
      name: 'cannes_hcloud_rate_limit_remaining',
      help: 'RateLimit-Remaining last reported by Hetzner, per token (label: hash prefix of the token)',
      labelNames: ['budget'] as const,
      registers,
    }),
    budgetWait: new Histogram({
      name: 'cannes_hcloud_budget_wait_seconds',
      help: 'Time a request waited for the client-side rate-limit budget before being sent',
      buckets: [0, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers,
    }),
    actionWait: new Histogram({
      name: 'cannes_hcloud_action_wait_seconds',
      help: 'Time from starting to wait for a Hetzner action until it finished, by command and outcome',
      labelNames: ['command', 'status'] as const,
      buckets: [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers,
    }),
  };
}
