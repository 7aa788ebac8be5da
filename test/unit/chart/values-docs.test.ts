import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CHART_DIR, documentedKeys, renderReadme, valueDocs } from '../../../tools/chart-docs.ts';

const values = readFileSync(`${CHART_DIR}/values.yaml`, 'utf8');
const readme = readFileSync(`${CHART_DIR}/README.md`, 'utf8');

describe('the chart README values table', () => {
  it('documents every value of values.yaml and lists no value that does not exist', () => {
    const inValues = valueDocs(values).map((v) => v.key);
    const inReadme = documentedKeys(readme);
    expect(inValues.length).toBeGreaterThan(20);
    expect(
      inReadme.filter((k) => !inValues.includes(k)),
      'documented but not in values.yaml',
    ).toEqual([]);
    expect(
      inValues.filter((k) => !inReadme.includes(k)),
      'in values.yaml but not documented',
    ).toEqual([]);
  });

  it('is up to date with values.yaml (run `node tools/chart-docs.ts`)', () => {
    expect(renderReadme(readme, values)).toBe(readme);
  });

  it('finds a value that has no description', () => {
    const text = `# -- Documented.\na: 1\nb:\n  # -- Documented too.\n  c: x\n  d: y\n`;
    expect(() => valueDocs(text)).toThrow(/no "# --" description for b\.d$/);
  });

  it('reads the description of the first key of a nested map', () => {
    const text = `outer:\n  # -- First.\n  first: 1\n  # -- Second.\n  second: [a]\n`;
    expect(valueDocs(text)).toEqual([
      { key: 'outer.first', type: 'int', default: '1', description: 'First.' },
      { key: 'outer.second', type: 'list', default: '["a"]', description: 'Second.' },
    ]);
  });

  it('notices a value the README lists but values.yaml no longer has', () => {
    const stale = readme
      .replace('| `logLevel` |', '| `logLevel` |')
      .replace(
        '| `priorityClassName` |',
        '| `removedValue` | string | `""` | Gone. |\n| `priorityClassName` |',
      );
    expect(documentedKeys(stale)).toContain('removedValue');
    expect(renderReadme(stale, values)).not.toBe(stale);
  });

  it('has no value that could carry a secret itself: secrets are referenced by Secret name', () => {
    const keys = valueDocs(values).map((v) => v.key);
    const secretish = keys.filter((k) => /(password|token|url$|apikey|masterkey$|privatekey)/i.test(k));
    expect(secretish).toEqual([]);
    expect(keys).toEqual(expect.arrayContaining(['database.existingSecret', 'masterKeys.existingSecret']));
  });
});
