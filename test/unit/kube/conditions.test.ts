import { describe, expect, it } from 'vitest';
import {
  findCondition,
  isConditionTrue,
  isValidReason,
  parseConditions,
  removeCondition,
  setCondition,
} from '../../../operator/kube/conditions.ts';

const t0 = new Date('2026-11-25T10:00:00.123Z');
const t1 = new Date('2026-11-25T11:00:00.000Z');
const t2 = new Date('2026-11-25T12:00:00.000Z');

describe('conditions', () => {
  it('adds a condition with a seconds-precision lastTransitionTime and observedGeneration', () => {
    const c = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'Provisioning', observedGeneration: 3 },
      t0,
    );
    expect(c).toEqual([
      {
        type: 'Ready',
        status: 'False',
        reason: 'Provisioning',
        message: '',
        observedGeneration: 3,
        lastTransitionTime: '2026-11-25T10:00:00Z',
      },
    ]);
  });

  it('keeps lastTransitionTime when only reason, message or generation change', () => {
    let c = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'Provisioning', observedGeneration: 1 },
      t0,
    );
    c = setCondition(
      c,
      { type: 'Ready', status: 'False', reason: 'WaitingForSsh', message: 'm', observedGeneration: 2 },
      t1,
    );
    expect(findCondition(c, 'Ready')).toMatchObject({
      reason: 'WaitingForSsh',
      message: 'm',
      observedGeneration: 2,
      lastTransitionTime: '2026-11-25T10:00:00Z',
    });
  });

  it('moves lastTransitionTime when the status flips, and only then', () => {
    let c = setCondition([], { type: 'Ready', status: 'False', reason: 'Provisioning' }, t0);
    c = setCondition(c, { type: 'Ready', status: 'True', reason: 'Ready' }, t1);
    expect(findCondition(c, 'Ready')?.lastTransitionTime).toBe('2026-11-25T11:00:00Z');
    c = setCondition(c, { type: 'Ready', status: 'True', reason: 'Ready' }, t2);
    expect(findCondition(c, 'Ready')?.lastTransitionTime).toBe('2026-11-25T11:00:00Z');
    expect(isConditionTrue(c, 'Ready')).toBe(true);
  });

  it('leaves other conditions untouched and in order', () => {
    let c = setCondition([], { type: 'A', status: 'True', reason: 'Yes' }, t0);
    c = setCondition(c, { type: 'B', status: 'False', reason: 'No' }, t0);
    c = setCondition(c, { type: 'A', status: 'False', reason: 'NoLonger' }, t1);
    expect(c.map((x) => `${x.type}=${x.status}`)).toEqual(['A=False', 'B=False']);
    expect(removeCondition(c, 'A').map((x) => x.type)).toEqual(['B']);
  });

  it('rejects reasons the API server would reject', () => {
    for (const bad of ['', 'has space', 'ends-with-dash', '1Digit', 'trailing:', 'x'.repeat(1025)]) {
      expect(isValidReason(bad), bad).toBe(false);
      expect(() => setCondition([], { type: 'Ready', status: 'True', reason: bad })).toThrow(TypeError);
    }
    for (const good of ['Ready', 'HostKeyMismatch', 'a', 'With_Underscore', 'A,B:C'])
      expect(isValidReason(good)).toBe(true);
  });

  it('rejects an invalid condition type', () => {
    expect(() => setCondition([], { type: 'not valid', status: 'True', reason: 'X' })).toThrow(TypeError);
  });

  it('parses conditions from wire JSON and rejects a bad status', () => {
    expect(parseConditions(undefined)).toEqual([]);
    expect(
      parseConditions([
        { type: 'Ready', status: 'True', reason: 'R', lastTransitionTime: 'x', observedGeneration: 2 },
      ]),
    ).toEqual([
      {
        type: 'Ready',
        status: 'True',
        reason: 'R',
        lastTransitionTime: 'x',
        message: '',
        observedGeneration: 2,
      },
    ]);
    expect(() =>
      parseConditions([{ type: 'Ready', status: 'yes', reason: 'R', lastTransitionTime: 'x' }]),
    ).toThrow();
  });
});
