import { describe, expect, it } from 'vitest';
import { newest } from './newest';

describe('newest', () => {
  it('drops an answer that arrives after a later request already answered', () => {
    const order = newest();
    const first = order.ask();
    const second = order.ask();
    expect(order.fresher(second)).toBe(true);
    expect(order.fresher(first)).toBe(false);
  });
  it('shows answers that arrive in order, and a newer one after a skipped one', () => {
    const order = newest();
    const [a, b, c] = [order.ask(), order.ask(), order.ask()];
    expect(order.fresher(a)).toBe(true);
    expect(order.fresher(c)).toBe(true);
    expect(order.fresher(b)).toBe(false);
    expect(order.fresher(order.ask())).toBe(true);
  });
});
