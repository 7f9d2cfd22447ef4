import { describe, expect, it } from 'vitest';
import { draftOf, rebase, summary, termsOf, type Terms } from './terms';

const stored: Terms = {
  currency: 'EUR',
  perMinute: 100,
  perKwh: 35,
  freeMinutes: 15,
  billingStepSecs: 60,
  minimumCharge: 200,
  dailyCap: 2500,
  deposit: 500,
  buyoutThreshold: null,
  tierDiscounts: [{ tier: 'vip', basisPoints: 1000 }],
  bands: [{ fromMinute: 1080, toMinute: 120, perMinute: 150 }],
  pausable: false,
};

describe('tariff terms in the set-up forms', () => {
  it('show stored terms in major units, an hourly price for the per-minute rate', () => {
    expect(draftOf(stored)).toEqual({
      perHour: '60.00', perKwh: '0.35', freeMinutes: '15', billingStep: '60', minimum: '2.00', dailyCap: '25.00', pausable: false,
    });
  });
  it('send back what was typed and keep the terms the form does not show', () => {
    const sent = termsOf({ ...draftOf(stored), perHour: '66', dailyCap: '' }, 'EUR', stored);
    expect(sent).toEqual({ ...stored, perMinute: 110, dailyCap: null });
  });
  it('take what someone else saved meanwhile wherever nothing was typed', () => {
    const opened = draftOf(stored);
    const typed = { ...opened, perHour: '78', pausable: true };
    const theirs = { ...opened, perHour: '72.00', dailyCap: '', freeMinutes: '0' };
    expect(rebase(typed, opened, theirs)).toEqual({ ...theirs, perHour: '78', pausable: true });
  });
  it('read what is not a number as nothing', () => {
    const sent = termsOf({ perHour: 'x', perKwh: '', freeMinutes: '-3', billingStep: 'y', minimum: '', dailyCap: ' ', pausable: true }, 'EUR');
    expect(sent).toEqual({
      currency: 'EUR', perMinute: 0, perKwh: 0, freeMinutes: 0, billingStepSecs: 60, minimumCharge: 0, dailyCap: null, pausable: true,
    });
  });
});

describe('a tariff in a few words', () => {
  it('names every term that prices something', () => {
    expect(summary(stored)).toBe('€60.00 an hour, €0.35 a kWh, first 15 min free, at least €2.00, at most €25.00 a day, a time-of-day rate, a discount for one tier, deposit €5.00');
  });
  it('says free when nothing is charged', () => {
    expect(summary({ ...stored, perMinute: 0, perKwh: 0, freeMinutes: 0, minimumCharge: 0, dailyCap: null, bands: [], tierDiscounts: [], deposit: 0 })).toBe('free');
  });
});
