import { describe, expect, it } from 'vitest';
import { dayStart } from './period';

describe('dayStart', () => {
  it("is the start of the day in the browser's time zone", () => {
    expect(dayStart('2026-12-03')).toBe(new Date(2026, 11, 3, 0, 0, 0).toISOString());
  });
  it('is null for an empty or partial date', () => {
    expect(dayStart('')).toBeNull();
    expect(dayStart('2026-12')).toBeNull();
  });
});
