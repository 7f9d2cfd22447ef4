import { describe, expect, it } from 'vitest';
import { pageOf } from './router';

describe('console paths', () => {
  it('name their page, and anything else opens the floor', () => {
    expect(pageOf('/console/setup')).toBe('setup');
    expect(pageOf('/console/login')).toBe('login');
    expect(pageOf('/console/')).toBe('floor');
    expect(pageOf('/console/nowhere')).toBe('floor');
  });
});
