import { describe, expect, it } from 'vitest';
import { weekStart } from './WorkPage';

describe('weekStart', () => {
  it('is the Monday of the week at midnight', () => {
    expect(weekStart(new Date(2026, 11, 3, 15, 30))).toEqual(new Date(2026, 10, 30)); // a Thursday
    expect(weekStart(new Date(2026, 10, 30, 0, 0))).toEqual(new Date(2026, 10, 30)); // a Monday
    expect(weekStart(new Date(2026, 11, 6, 23, 59))).toEqual(new Date(2026, 10, 30)); // a Sunday
  });
});
