import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/**
 * Every store metric, in one place. Labels are fixed vocabularies (phase, error reason,
 * migration id), never ids, SQL text or values.
 */
export interface StoreMetrics {
  statements: Counter<never>;
  statementDuration: Histogram<never>;
  retries: Counter<'phase'>;
  unavailable: Counter<never>;
  decryptFailures: Counter<'reason'>;
  schemaVersion: Gauge<never>;
}

/** Every reason an EnvelopeError carries (envelope.ts), exported at 0 from the start. */
export const DECRYPT_FAILURE_REASONS = [
  'EnvelopeBindingMismatch',
  'EnvelopeEmptyPlaintext',
  'EnvelopeMalformed',
  'EnvelopeNotUtf8',
  'EnvelopeTampered',
  'EnvelopeUnknownKey',
  'EnvelopeUnsupported',
  'RoutingFieldsUnauthenticated',
] as const;

export function createStoreMetrics(registry: Registry): StoreMetrics {
  const registers = [registry];
  const metrics = {
    statements: new Counter({
      name: 'cannes_store_statements_total',
      help: 'SQL statements sent to Postgres (BEGIN/COMMIT included)',
      registers,
    }),
    statementDuration: new Histogram({
      name: 'cannes_store_statement_duration_seconds',
      help: 'Postgres statement latency, one round trip (connection wait included)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    retries: new Counter({
      name: 'cannes_store_retries_total',
      help: 'Database operations retried after a lost connection (phase: connect or statement)',
      labelNames: ['phase'] as const,
      registers,
    }),
    unavailable: new Counter({
      name: 'cannes_store_unavailable_total',
      help: 'Database operations that failed after retrying for the whole retry window',
      registers,
    }),
    decryptFailures: new Counter({
      name: 'cannes_store_decrypt_failures_total',
      help: 'Stored secrets that failed to decrypt, by reason (EnvelopeTampered / EnvelopeBindingMismatch / RoutingFieldsUnauthenticated mean someone changed the database)',
      labelNames: ['reason'] as const,
      registers,
    }),
    schemaVersion: new Gauge({
      name: 'cannes_store_schema_version',
      help: 'Highest schema migration applied (as seen at start-up)',
      registers,
    }),
  };
  // A series per reason from the start, so an alert's increase() sees the first failure.
  for (const reason of DECRYPT_FAILURE_REASONS) metrics.decryptFailures.inc({ reason }, 0);
  return metrics;
}
