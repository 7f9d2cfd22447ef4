import { minorDigits } from '../floor/model';

/** A typed amount ("6.5") in minor units of `currency` (650 for EUR); 0 for what is not a number. */
export function toMinor(text: string, currency: string): number {
  const n = Number.parseFloat(text.replace(',', '.'));
  if (!Number.isFinite(n) || n < 0) return 0;
  return Math.round(n * 10 ** minorDigits(currency));
}
