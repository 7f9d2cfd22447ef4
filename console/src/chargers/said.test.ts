import { describe, expect, it } from 'vitest';
import { said } from './ChargersPage';

describe('said', () => {
  it("is the status of the charger's answer when it has one", () => {
    expect(said({ status: 'answered', response: { status: 'Rejected' } })).toBe('Rejected');
  });
  it("is the call's state while there is no answer, or the answer has no status", () => {
    expect(said({ status: 'timed_out', response: null })).toBe('timed_out');
    expect(said({ status: 'answered', response: { configurationKey: [] } })).toBe('answered');
  });
});
