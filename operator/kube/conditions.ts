import { TerminalError } from '../../common/errors.ts';
import { isRecord } from './object.ts';

/** metav1.Condition. */
export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  observedGeneration?: number;
  /** RFC 3339, seconds precision; changes only when `status` changes. */
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ConditionInput {
  type: string;
  status: ConditionStatus;
  reason: string;
  message?: string;
  /** The `metadata.generation` this condition was computed from. */
  observedGeneration?: number | undefined;
}

// The API server's own validation of metav1.Condition (apimachinery ValidateConditions).
export const CONDITION_REASON_RE = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;
const CONDITION_TYPE_RE =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$/;
const MAX_REASON = 1024;
const MAX_MESSAGE = 32_768;
const MAX_TYPE = 316;

export function isValidReason(reason: string): boolean {
  return reason.length <= MAX_REASON && CONDITION_REASON_RE.test(reason);
}

/** metav1.Time: RFC 3339 in UTC with whole seconds. */
export function metaTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * Returns a new list with `input` applied (meta.SetStatusCondition): `lastTransitionTime` is
 * kept unless the status flips; reason, message and observedGeneration are always updated.
 * Throws a TypeError (a programming error) on a reason the API server would reject.
 */
export function setCondition(
  conditions: readonly Condition[],
  input: ConditionInput,
  now: Date = new Date(),
): Condition[] {
  if (!isValidReason(input.reason))
    throw new TypeError(`condition reason ${JSON.stringify(input.reason)} is not CamelCase`);
  if (input.type.length > MAX_TYPE || !CONDITION_TYPE_RE.test(input.type)) {
    throw new TypeError(`condition type ${JSON.stringify(input.type)} is invalid`);
  }
  const message = (input.message ?? '').slice(0, MAX_MESSAGE);
  const existing = conditions.find((c) => c.type === input.type);
  const next: Condition = {
    type: input.type,
    status: input.status,
    lastTransitionTime:
      existing && existing.status === input.status ? existing.lastTransitionTime : metaTime(now),
    reason: input.reason,
    message,
  };
  if (input.observedGeneration !== undefined) next.observedGeneration = input.observedGeneration;
  else if (existing?.observedGeneration !== undefined) next.observedGeneration = existing.observedGeneration;
  if (!existing) return [...conditions, next];
  return conditions.map((c) => (c.type === input.type ? next : c));
}

export function findCondition(conditions: readonly Condition[], type: string): Condition | undefined {
  return conditions.find((c) => c.type === type);
}

export function isConditionTrue(conditions: readonly Condition[], type: string): boolean {
  return findCondition(conditions, type)?.status === 'True';
}

export function removeCondition(conditions: readonly Condition[], type: string): Condition[] {
  return conditions.filter((c) => c.type !== type);
}

/** Parses `status.conditions` from wire JSON (absent → []). */
export function parseConditions(raw: unknown): Condition[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new TerminalError('InvalidObject', 'status.conditions is not a list');
  return raw.map((c, i) => {
    if (!isRecord(c)) throw new TerminalError('InvalidObject', `status.conditions[${i}] is not an object`);
    const { type, status, lastTransitionTime, reason, message, observedGeneration } = c;
    if (typeof type !== 'string' || typeof reason !== 'string' || typeof lastTransitionTime !== 'string') {
      throw new TerminalError(
        'InvalidObject',
        `status.conditions[${i}] lacks type, reason or lastTransitionTime`,
      );
    }
    if (status !== 'True' && status !== 'False' && status !== 'Unknown') {
      throw new TerminalError('InvalidObject', `status.conditions[${i}].status is not True/False/Unknown`);
    }
    const out: Condition = {
      type,
      status,
      lastTransitionTime,
      reason,
      message: typeof message === 'string' ? message : '',
    };
    if (typeof observedGeneration === 'number') out.observedGeneration = observedGeneration;
    return out;
  });
}
