import { describe, expect, it } from 'vitest';
import { autogroupWarning, schedulerAutogroups } from './scheduler.js';

describe('scheduler autogroups', () => {
  it('reads the kernel setting: 0 is off, anything else on, no setting unknown', () => {
    expect(schedulerAutogroups(() => '1\n')).toBe(true);
    expect(schedulerAutogroups(() => '0\n')).toBe(false);
    expect(
      schedulerAutogroups(() => {
        throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      }),
    ).toBeUndefined();
  });

  it('warns under the layout only while autogroups are on, and says how to turn them off', () => {
    expect(autogroupWarning(true)).toMatch(/autogroups are on.*ops\/services\.sh/);
    expect(autogroupWarning(false)).toBeUndefined();
    expect(autogroupWarning(undefined)).toBeUndefined();
  });
});
