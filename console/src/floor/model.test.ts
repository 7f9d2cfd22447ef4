import { describe, expect, it } from 'vitest';
import { clock, costAt, deviceLine, knowCurrencies, minorDigits, money, remainingAt, warning, type RunningSession } from './model';

const session = (over: Partial<RunningSession> = {}): RunningSession => ({
  session_id: 's',
  status: 'active',
  patron_id: 'p',
  patron_name: 'Ada',
  started_at: '2026-12-02T10:00:00Z',
  planned_end_at: '2026-12-02T11:00:00Z',
  remaining_seconds: 600,
  running_cost: 300,
  cost_in_a_minute: 310,
  ...over,
});

describe('the floor tile arithmetic', () => {
  it('counts the remaining time down from the snapshot and stops at zero', () => {
    expect(remainingAt(session(), 0, 0)).toBe(600);
    expect(remainingAt(session(), 0, 90_500)).toBe(509);
    expect(remainingAt(session(), 0, 700_000)).toBe(0);
    expect(remainingAt(session({ remaining_seconds: null }), 0, 5000)).toBeNull();
  });

  it('keeps a paused session where it stood', () => {
    const paused = session({ status: 'paused' });
    expect(remainingAt(paused, 0, 120_000)).toBe(600);
    expect(costAt(paused, 0, 120_000)).toBe(300);
  });

  it('ticks the cost toward the next minute and no further', () => {
    expect(costAt(session(), 0, 0)).toBe(300);
    expect(costAt(session(), 0, 30_000)).toBe(305);
    expect(costAt(session(), 0, 60_000)).toBe(310);
    expect(costAt(session(), 0, 600_000)).toBe(310);
    expect(costAt(session(), 10_000, 0)).toBe(300);
  });

  it('warns 5 and 1 minutes before the end', () => {
    expect(warning(null)).toBeNull();
    expect(warning(301)).toBeNull();
    expect(warning(300)).toBe('warn5');
    expect(warning(61)).toBe('warn5');
    expect(warning(60)).toBe('warn1');
    expect(warning(0)).toBe('warn1');
  });

  it('shows minor units as money in the currency', () => {
    expect(money(1234, 'EUR')).toBe('€12.34');
    expect(money(500, 'JPY')).toBe('¥500');
    expect(money(1234, 'KWD')).toContain('1.234');
  });

  it('shows a clock', () => {
    expect(clock(0)).toBe('0:00');
    expect(clock(754)).toBe('12:34');
    expect(clock(3754)).toBe('1:02:34');
  });
});

describe('deviceLine', () => {
  const at = '2026-12-03T10:00:00Z';
  it('reads a plug reading as power and watts', () => {
    expect(deviceLine({ kind: 'device_state', reachable: true, on: true, power_w: 85, reported_at: at })).toEqual({ text: 'device: power on, 85 W', problem: false });
  });
  it('marks an unreachable device as a problem', () => {
    expect(deviceLine({ kind: 'device_state', reachable: false, on: null, power_w: null, reported_at: at }).problem).toBe(true);
    expect(deviceLine({ kind: 'device_state', reachable: true, on: null, power_w: null, reported_at: at })).toEqual({ text: 'device answering', problem: false });
    expect(deviceLine({ kind: 'cabinet_state', reachable: null, on: null, power_w: null, reported_at: at })).toEqual({ text: 'cabinet: slots reported', problem: false });
  });
  it('says whether a PC agent is connected', () => {
    expect(deviceLine({ kind: 'agent_state', reachable: true, on: null, power_w: null, reported_at: at })).toEqual({ text: 'PC agent connected', problem: false });
    expect(deviceLine({ kind: 'agent_state', reachable: false, on: null, power_w: null, reported_at: at })).toEqual({ text: 'PC agent not connected', problem: true });
  });
  it('names other events by their kind', () => {
    expect(deviceLine({ kind: 'agent_hello', reachable: null, on: null, power_w: null, reported_at: at }).text).toBe('device: agent hello');
  });
});

describe('minorDigits', () => {
  it("takes the server's minor units over the browser's", () => {
    knowCurrencies([{ code: 'HUF', minorUnits: 2 }, { code: 'JPY', minorUnits: 0 }]);
    expect(minorDigits('HUF')).toBe(2);
    expect(minorDigits('JPY')).toBe(0);
    // 600.00 HUF in the ledger's minor units reads as 600 forint, not 60,000.
    expect(money(60000, 'HUF')).toMatch(/600(\.00)?/);
  });
});
