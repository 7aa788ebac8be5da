/**
 * A small validator for the subset of OpenAPI 3.0 schema keywords the Hetzner description
 * uses ($ref, allOf/oneOf/anyOf, nullable, type, properties, required,
 * additionalProperties, items, enum, pattern). Returns the first few mismatches as paths.
 */
function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class OpenApi {
  readonly doc: Record<string, unknown>;
  constructor(doc: unknown) {
    if (!isObj(doc)) throw new Error('not an OpenAPI document');
    this.doc = doc;
  }

  resolve(ref: string): unknown {
    let cur: unknown = this.doc;
    for (const part of ref.replace(/^#\//, '').split('/')) {
      if (!isObj(cur)) return undefined;
      cur = cur[part];
    }
    return cur;
  }

  /** The response schema for a path template, method and status (falls back to 4xx/5xx). */
  responseSchema(path: string, method: string, status: number): unknown {
    const paths = this.doc['paths'];
    if (!isObj(paths)) return undefined;
    const p = paths[path];
    if (!isObj(p)) return undefined;
    const op = p[method.toLowerCase()];
    if (!isObj(op) || !isObj(op['responses'])) return undefined;
    const responses = op['responses'];
    const r = responses[String(status)] ?? responses[`${String(status)[0]}xx`];
    if (!isObj(r) || !isObj(r['content'])) return undefined;
    const c = r['content']['application/json'];
    return isObj(c) ? c['schema'] : undefined;
  }

  /** Path templates of the document, for matching a concrete path. */
  matchPath(concrete: string): string | undefined {
    const paths = this.doc['paths'];
    if (!isObj(paths)) return undefined;
    const candidates = Object.keys(paths).filter((t) =>
      new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(concrete),
    );
    // Prefer the most literal template (`/servers/{id}/actions/poweron` over `{action_id}`).
    return candidates.sort((a, b) => (a.match(/\{/g)?.length ?? 0) - (b.match(/\{/g)?.length ?? 0))[0];
  }

  validate(schema: unknown, value: unknown, at = '$', errors: string[] = []): string[] {
    if (errors.length > 10) return errors;
    if (!isObj(schema)) return errors;
    if (typeof schema['$ref'] === 'string')
      return this.validate(this.resolve(schema['$ref']), value, at, errors);
    if (value === null) {
      if (schema['nullable'] !== true && !this.#allowsNull(schema)) errors.push(`${at}: null not allowed`);
      return errors;
    }
    if (Array.isArray(schema['allOf'])) for (const s of schema['allOf']) this.validate(s, value, at, errors);
    for (const k of ['oneOf', 'anyOf']) {
      const alts = schema[k];
      if (Array.isArray(alts) && !alts.some((s) => this.validate(s, value, at, []).length === 0))
        errors.push(`${at}: matches none of ${k}`);
    }
    const t = schema['type'];
    if (typeof t === 'string' && !typeOk(t, value)) {
      errors.push(`${at}: expected ${t}, got ${JSON.stringify(value)?.slice(0, 60)}`);
      return errors;
    }
    if (Array.isArray(schema['enum']) && !schema['enum'].some((e: unknown) => e === value))
      errors.push(`${at}: ${JSON.stringify(value)} not in enum`);
    if (
      typeof schema['pattern'] === 'string' &&
      typeof value === 'string' &&
      !new RegExp(schema['pattern']).test(value)
    )
      errors.push(`${at}: ${JSON.stringify(value)} does not match ${schema['pattern']}`);
    if (Array.isArray(value) && schema['items'] !== undefined)
      for (const [i, v] of value.entries()) this.validate(schema['items'], v, `${at}[${i}]`, errors);
    if (isObj(value)) {
      const props = isObj(schema['properties']) ? schema['properties'] : {};
      if (Array.isArray(schema['required']))
        for (const r of schema['required'])
          if (typeof r === 'string' && !(r in value)) errors.push(`${at}.${r}: missing`);
      for (const [k, v] of Object.entries(value)) {
        if (k in props) this.validate(props[k], v, `${at}.${k}`, errors);
        else if (isObj(schema['additionalProperties']))
          this.validate(schema['additionalProperties'], v, `${at}.${k}`, errors);
      }
    }
    return errors;
  }

  #allowsNull(schema: Record<string, unknown>): boolean {
    for (const k of ['allOf', 'oneOf', 'anyOf']) {
      const alts = schema[k];
      if (Array.isArray(alts) && alts.some((s) => isObj(s) && s['nullable'] === true)) return true;
    }
    return false;
  }
}

function typeOk(t: string, v: unknown): boolean {
  switch (t) {
    case 'object':
      return isObj(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
    default:
      return true;
  }
}
