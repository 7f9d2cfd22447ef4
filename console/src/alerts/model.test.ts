import { describe, expect, it } from 'vitest';
import { dismissEject, openEjects, openSos } from './model';

describe('open SOS alerts', () => {
  it('join when raised, change when acknowledged and go when resolved', () => {
    let open = openSos([], { kind: 'sos.raised', subjectId: 'a', data: { location: 'Bar', note: 'help' } });
    expect(open).toEqual([{ id: 'a', status: 'raised', location: 'Bar', note: 'help', raisedAt: '' }]);
    expect(openSos(open, { kind: 'sos.raised', subjectId: 'a', data: {} })).toBe(open);
    open = openSos(open, { kind: 'sos.acknowledged', subjectId: 'a', data: {} });
    expect(open[0].status).toBe('acknowledged');
    expect(openSos(open, { kind: 'task.created', subjectId: 't', data: {} })).toBe(open);
    expect(openSos(open, { kind: 'sos.resolved', subjectId: 'a', data: {} })).toEqual([]);
  });
});

describe('eject alerts', () => {
  const announced = {
    kind: 'rental.eject_unanswered',
    subjectId: 'rental-1',
    data: { command_id: 'c1', rental_id: 'rental-1', cabinet: 'Cabinet A', slot: 2, asset: 'pb-002' },
  };
  it('join once when an eject is announced, ignore other events and go when dismissed', () => {
    const open = openEjects([], announced);
    expect(open).toEqual([{ id: 'c1', cabinet: 'Cabinet A', slot: 2, asset: 'pb-002' }]);
    expect(openEjects(open, announced)).toBe(open);
    expect(openEjects(open, { kind: 'sos.raised', subjectId: 'a', data: {} })).toBe(open);
    expect(openEjects(open, { kind: 'rental.eject_unanswered', subjectId: 'r', data: {} })).toBe(open);
    expect(dismissEject(open, 'c1')).toEqual([]);
  });
  it('go when the answer is announced, whoever gave it', () => {
    const open = openEjects([], announced);
    const other = { kind: 'rental.eject_answered', subjectId: 'rental-9', data: { command_id: 'c9', outcome: 'ejected' } };
    expect(openEjects(open, other)).toBe(open);
    const answered = { kind: 'rental.eject_answered', subjectId: 'rental-1', data: { command_id: 'c1', outcome: 'staff_ejected' } };
    expect(openEjects(open, answered)).toEqual([]);
  });
  it('keep an eject without slot or powerbank', () => {
    expect(openEjects([], { ...announced, data: { command_id: 'c2', cabinet: 'B' } })).toEqual([
      { id: 'c2', cabinet: 'B', slot: null, asset: null },
    ]);
  });
});
