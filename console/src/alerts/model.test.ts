import { describe, expect, it } from 'vitest';
import { openSos } from './model';

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
