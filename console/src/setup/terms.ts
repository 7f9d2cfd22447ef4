// A tariff's terms as the set-up forms type them, and back.
import type { TariffTermsInput, VenuePricesResult } from '../api/generated';
import { minorDigits } from '../floor/model';
import { toMinor } from './money';

export type Terms = NonNullable<VenuePricesResult['venue']>['prices'][number]['tariff']['terms'];

/** The terms as typed: amounts in major units ("6.00"), an hourly price for the per-minute rate. */
export type Draft = {
  perHour: string;
  perKwh: string;
  freeMinutes: string;
  billingStep: string;
  minimum: string;
  dailyCap: string;
  pausable: boolean;
};

const major = (minor: number, currency: string) => (minor / 10 ** minorDigits(currency)).toFixed(minorDigits(currency));

export const NEW: Draft = { perHour: '6.00', perKwh: '0', freeMinutes: '0', billingStep: '60', minimum: '0', dailyCap: '', pausable: true };

export function draftOf(terms: Terms): Draft {
  return {
    perHour: major(terms.perMinute * 60, terms.currency),
    perKwh: major(terms.perKwh, terms.currency),
    freeMinutes: String(terms.freeMinutes),
    billingStep: String(terms.billingStepSecs),
    minimum: major(terms.minimumCharge, terms.currency),
    dailyCap: terms.dailyCap === null || terms.dailyCap === undefined ? '' : major(terms.dailyCap, terms.currency),
    pausable: terms.pausable,
  };
}

/** The terms to send: what the form shows over `base` (a tariff's other terms — deposit, bands, tier discounts —
 * are kept as they are). */
export function termsOf(d: Draft, currency: string, base?: Terms): TariffTermsInput {
  const whole = (v: string, fallback: number) => {
    const n = Number.parseInt(v, 10);
    return Number.isFinite(n) && n >= 0 ? n : fallback;
  };
  return {
    ...(base ?? {}),
    currency,
    perMinute: Math.round(toMinor(d.perHour, currency) / 60),
    perKwh: toMinor(d.perKwh, currency),
    freeMinutes: whole(d.freeMinutes, 0),
    billingStepSecs: whole(d.billingStep, 60),
    minimumCharge: toMinor(d.minimum, currency),
    dailyCap: d.dailyCap.trim() ? toMinor(d.dailyCap, currency) : null,
    pausable: d.pausable,
  };
}

