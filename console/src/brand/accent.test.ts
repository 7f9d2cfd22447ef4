import { describe, expect, it } from 'vitest';
import { accentFor, contrastWithWhite } from './accent';

describe('accentFor', () => {
  it('keeps a dark brand colour as it is', () => {
    expect(accentFor('#aa3300')).toBe('#aa3300');
    expect(accentFor('#0B5CAD')).toBe('#0b5cad');
  });

  it('darkens a light brand colour until white text on it (and it on the page grey) reads at AA', () => {
    for (const light of ['#ffff00', '#ffffff', '#7fd4ff', '#f59e0b']) {
      const accent = accentFor(light)!;
      expect(accent).not.toBe(light);
      expect(contrastWithWhite(accent)).toBeGreaterThanOrEqual(5);
    }
  });

  it('keeps the console colour when there is no brand colour or it is malformed', () => {
    expect(accentFor(null)).toBeNull();
    expect(accentFor('red')).toBeNull();
    expect(accentFor('#12345')).toBeNull();
  });
});
