/**
 * Hetzner's label selector (the Kubernetes one): comma-separated requirements, all of
 * which must hold: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
 * `k!=v` and `notin` also match objects without the label, as in Kubernetes.
 */
export type Requirement =
  | { op: 'eq' | 'neq'; key: string; value: string }
  | { op: 'exists' | 'absent'; key: string }
  | { op: 'in' | 'notin'; key: string; values: string[] };

export class SelectorError extends Error {}

const KEY =
  /^([a-z0-9A-Z]([a-z0-9A-Z.-]{0,251}[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([a-z0-9A-Z._-]{0,61}[a-z0-9A-Z])?$/;
const VALUE = /^(|[a-z0-9A-Z]([a-z0-9A-Z._-]{0,61}[a-z0-9A-Z])?)$/;

/** Split on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (depth < 0) throw new SelectorError('unbalanced parenthesis');
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw new SelectorError('unbalanced parenthesis');
  out.push(cur);
  return out;
}

function key(k: string): string {
  const t = k.trim();
  if (!KEY.test(t)) throw new SelectorError(`invalid label key ${JSON.stringify(t)}`);
  return t;
}
function value(v: string): string {
  const t = v.trim();
  if (!VALUE.test(t)) throw new SelectorError(`invalid label value ${JSON.stringify(t)}`);
  return t;
}

export function parseSelector(selector: string): Requirement[] {
  if (selector.trim() === '') return [];
  return splitTop(selector).map((raw) => {
    const part = raw.trim();
    let m = /^(.+?)\s+(in|notin)\s*\((.*)\)$/.exec(part);
    if (m) {
      const values = m[3]!.split(',').map(value);
      return { op: m[2] === 'in' ? 'in' : 'notin', key: key(m[1]!), values };
    }
    m = /^([^=!]+)(==|!=|=)(.*)$/.exec(part);
    if (m) return { op: m[2] === '!=' ? 'neq' : 'eq', key: key(m[1]!), value: value(m[3]!) };
    if (part.startsWith('!')) return { op: 'absent', key: key(part.slice(1)) };
    return { op: 'exists', key: key(part) };
  });
}

export function matches(reqs: readonly Requirement[], labels: Readonly<Record<string, string>>): boolean {
  return reqs.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case 'eq':
        return has && v === r.value;
      case 'neq':
        return !has || v !== r.value;
      case 'exists':
        return has;
      case 'absent':
        return !has;
      case 'in':
        return has && r.values.includes(v!);
      case 'notin':
        return !has || !r.values.includes(v!);
    }
    return false;
  });
}

/** Label keys and values as Hetzner validates them on create/update. */
export function validLabels(labels: Record<string, unknown>): string | undefined {
  for (const [k, v] of Object.entries(labels)) {
    if (!KEY.test(k)) return `invalid label key ${JSON.stringify(k)}`;
    if (typeof v !== 'string' || !VALUE.test(v)) return `invalid label value for ${JSON.stringify(k)}`;
  }
  return undefined;
}
