/**
 * No function in operator/ is longer than about 80 lines (issue 23), unless it is a declaration
 * table: a function whose body is one long list of declarations reads as a table, not as logic.
 * The table functions are named below; a new long function fails this test with its place.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
// The TypeScript package (7.x) has no JS compiler API; vitest's bundler ships an ESTree parser.
import { parseAst } from 'rolldown/parseAst';
import { describe, expect, it } from 'vitest';

const REPO = join(import.meta.dirname, '..', '..', '..');
const LIMIT = 80;
/** `file:function` of the declaration tables allowed to be longer. */
const TABLES = new Set(['operator/kube/metrics.ts:constructor']);

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

interface Fn {
  readonly where: string;
  readonly name: string;
  readonly lines: number;
}

type Node = { type: string; start: number; end: number; [k: string]: unknown };

const FUNCTIONS = new Set(['FunctionDeclaration', 'FunctionExpression', 'ArrowFunctionExpression']);

function nameOf(fn: Node, parent: Node | undefined): string {
  const id = fn['id'] as Node | null | undefined;
  if (id && typeof id['name'] === 'string') return id['name'];
  if (
    parent &&
    (parent.type === 'MethodDefinition' || parent.type === 'Property' || parent.type === 'PropertyDefinition')
  ) {
    if (parent['kind'] === 'constructor') return 'constructor';
    const key = parent['key'] as Node;
    return typeof key['name'] === 'string' ? key['name'] : '(computed)';
  }
  if (parent?.type === 'VariableDeclarator') {
    const key = parent['id'] as Node;
    if (typeof key['name'] === 'string') return key['name'];
  }
  return '(anonymous)';
}

/** Every function of operator/ with its length in lines, longest first. */
function functionLengths(): Fn[] {
  const out: Fn[] = [];
  for (const file of sources(join(REPO, 'operator'))) {
    const rel = relative(REPO, file);
    const text = readFileSync(file, 'utf8');
    const lineStarts = [0];
    for (let i = 0; i < text.length; i++) if (text[i] === '\n') lineStarts.push(i + 1);
    // Offsets are UTF-16 positions here only for ASCII text; count lines on the same string.
    const lineOf = (pos: number) => {
      let lo = 0;
      let hi = lineStarts.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if ((lineStarts[mid] ?? 0) <= pos) lo = mid;
        else hi = mid - 1;
      }
      return lo;
    };
    const visit = (node: Node, parent: Node | undefined) => {
      if (FUNCTIONS.has(node.type)) {
        const first = lineOf(
          parent && parent.type !== 'VariableDeclarator' && parent.type !== 'Program'
            ? Math.min(parent.start, node.start)
            : node.start,
        );
        const lines = lineOf(node.end) - first + 1;
        out.push({ where: `${rel}:${first + 1}`, name: `${rel}:${nameOf(node, parent)}`, lines });
      }
      for (const v of Object.values(node)) {
        if (Array.isArray(v))
          for (const c of v) if (c && typeof c === 'object' && 'type' in c) visit(c as Node, node);
        if (v && typeof v === 'object' && !Array.isArray(v) && 'type' in v) visit(v as Node, node);
      }
    };
    visit(parseAst(text, { lang: 'ts' }, file) as unknown as Node, undefined);
  }
  return out.sort((a, b) => b.lines - a.lines);
}

describe('function length in operator/', () => {
  it(`has no function over ${LIMIT} lines but the declaration tables`, () => {
    const long = functionLengths()
      .filter((f) => f.lines > LIMIT && !TABLES.has(f.name))
      .map((f) => `${f.name} (${f.where}, ${f.lines} lines)`);
    expect(long).toEqual([]);
  });

  it('finds a long function when there is one (the measure itself works)', () => {
    const all = functionLengths();
    if (process.env['CANNES_PRINT_LONGEST'])
      console.log(
        all
          .slice(0, 10)
          .map((f) => `${f.lines} ${f.name} ${f.where}`)
          .join('\n'),
      );
    expect(all.length).toBeGreaterThan(100);
    expect(all.some((f) => TABLES.has(f.name) && f.lines > LIMIT)).toBe(true);
  });
});
