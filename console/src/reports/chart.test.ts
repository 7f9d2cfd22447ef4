import { describe, expect, it } from 'vitest';
import { bars, everyDay, heat } from './chart';

describe('the revenue chart', () => {
  it('scales bars to the largest day and keeps them inside the chart', () => {
    const b = bars(
      [
        { day: '2026-12-01', amount: 500 },
        { day: '2026-12-02', amount: 1000 },
        { day: '2026-12-03', amount: 0 },
      ],
      300,
      100,
    );
    expect(b.map((x) => x.height)).toEqual([50, 100, 0]);
    expect(b.map((x) => x.y)).toEqual([50, 0, 100]);
    expect(b.every((x) => x.x >= 0 && x.x + x.width <= 300)).toBe(true);
    expect(bars([], 300, 100)).toEqual([]);
  });

  it('shades utilisation from white to the accent', () => {
    expect(heat(0)).toBe('rgb(255, 255, 255)');
    expect(heat(1)).toBe('rgb(11, 92, 173)');
    expect(heat(7)).toBe('rgb(11, 92, 173)');
  });
});

describe('the days of a period', () => {
  it('are all there, with the days without revenue at 0', () => {
    expect(everyDay('2026-11-29', '2026-12-02', [{ day: '2026-12-01', amount: 700 }])).toEqual([
      { day: '2026-11-29', amount: 0 },
      { day: '2026-11-30', amount: 0 },
      { day: '2026-12-01', amount: 700 },
      { day: '2026-12-02', amount: 0 },
    ]);
    expect(everyDay('2026-12-02', '2026-12-01', [])).toEqual([]);
  });
});
