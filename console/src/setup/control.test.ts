import { describe, expect, it } from 'vitest';
import { changedSettings, controlFields, controlSettings, hasConnectors } from './control';

describe('control settings', () => {
  it('asks each control for what reaches its device', () => {
    expect(controlFields('SHELLY').map((f) => f.key)).toEqual(['host', 'generation']);
    expect(controlFields('OCPP').map((f) => f.key)).toEqual(['charge_point_id']);
    expect(controlFields('MANUAL')).toEqual([]);
    expect(controlFields('AGENT')).toEqual([]);
  });
  it('leaves empty fields out and sends numbers as numbers', () => {
    expect(controlSettings('SHELLY', { host: ' 10.0.0.5 ', generation: '2' })).toEqual({ host: '10.0.0.5', generation: 2 });
    expect(controlSettings('MIKROTIK', { host: 'router', mac: '', interface: 'ether5' })).toEqual({ host: 'router', interface: 'ether5' });
    expect(controlSettings('TASMOTA', { topic: 'plug7', host: 'ignored' })).toEqual({ topic: 'plug7' });
  });
  it('asks chargers and cabinets how many connectors or slots', () => {
    expect(hasConnectors('EV_CHARGER')).toBe(true);
    expect(hasConnectors('POWERBANK_CABINET')).toBe(true);
    expect(hasConnectors('PC')).toBe(false);
  });
});

describe('changedSettings', () => {
  it('keeps what the form does not show and sends nothing when nothing changed', () => {
    const existing = { host: '10.0.0.1', mac: 'AA:BB:CC:DD:EE:FF', credentials_ref: 'router', note: 'rack 2' };
    const values = { host: '10.0.0.1', mac: 'AA:BB:CC:DD:EE:FF', credentials_ref: 'router' };
    expect(changedSettings('MIKROTIK', existing, values)).toBeNull();
    expect(changedSettings('MIKROTIK', existing, { ...values, host: '10.0.0.2' })).toEqual({ ...existing, host: '10.0.0.2' });
  });
  it('removes a field the form emptied', () => {
    expect(changedSettings('MIKROTIK', { host: 'h', mac: 'm', interface: 'ether2' }, { host: 'h', mac: 'm', interface: '' })).toEqual({ host: 'h', mac: 'm' });
  });
});
