// A tariff's terms as the set-up forms type them, and back.
import type { TariffTermsInput, VenuePricesResult } from '../api/generated';
import { minorDigits, money } from '../floor/model';
import { t } from '../i18n';
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

/** A draft made from `from` brought onto `to` (someone else saved the tariff meanwhile): each field still as it was in
 * `from` takes its value in `to`, and each field typed since keeps what was typed. */
export function rebase(draft: Draft, from: Draft, to: Draft): Draft {
  const keys = Object.keys(draft) as (keyof Draft)[];
  return Object.fromEntries(keys.map((k) => [k, draft[k] === from[k] ? to[k] : draft[k]])) as Draft;
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


/** A tariff's terms in a few words: "€6.00 an hour, first 10 min free". */
export function summary(terms: Terms): string {
  const parts: string[] = [];
  if (terms.perMinute) parts.push(t.setup.anHour(money(terms.perMinute * 60, terms.currency)));
  if (terms.perKwh) parts.push(t.setup.aKwh(money(terms.perKwh, terms.currency)));
  if (terms.freeMinutes) parts.push(t.setup.freeFirst(terms.freeMinutes));
  if (terms.minimumCharge) parts.push(t.setup.atLeast(money(terms.minimumCharge, terms.currency)));
  if (terms.dailyCap !== null && terms.dailyCap !== undefined) parts.push(t.setup.atMostADay(money(terms.dailyCap, terms.currency)));
  if (terms.bands.length > 0) parts.push(t.setup.bands(terms.bands.length));
  if (terms.tierDiscounts.length > 0) parts.push(t.setup.tierDiscounts(terms.tierDiscounts.length));
  if (terms.deposit) parts.push(t.setup.depositOf(money(terms.deposit, terms.currency)));
  if (parts.length === 0) parts.push(t.setup.free);
  return parts.join(', ');
}

