import { cleanup, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { Tile } from './FloorPage';
import type { StationTile, VenueTile } from './model';

afterEach(cleanup);

const venue: VenueTile = { venue_id: 'v', name: 'Arcade', currency: 'EUR', busy: 1, stations: [] };
const running = (over: Partial<NonNullable<StationTile['session']>> = {}): StationTile => ({
  station_id: 's1',
  name: 'PC-01',
  kind: 'pc',
  status: 'in_session',
  rentals_running: 0,
  session: {
    session_id: 'x',
    status: 'active',
    patron_id: 'p',
    patron_name: 'Ada',
    started_at: '2026-12-02T10:00:00Z',
    planned_end_at: '2026-12-02T11:00:00Z',
    remaining_seconds: 290,
    running_cost: 1200,
    cost_in_a_minute: 1260,
    ...over,
  },
});

describe('a floor tile', () => {
  it('shows who is on it, the time left, the cost so far and the 5-minute warning, with its actions', () => {
    render(<Tile station={running()} venue={venue} at={0} now={30_000} />);
    expect(screen.getByRole('heading', { name: 'PC-01' })).toBeTruthy();
    expect(screen.getByText('Ada')).toBeTruthy();
    expect(screen.getByText('4:20 left')).toBeTruthy();
    expect(screen.getByText('€12.30')).toBeTruthy();
    expect(screen.getByRole('alert').textContent).toBe('5 minutes left');
    expect(screen.getByRole('button', { name: 'Pause' })).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Stop' })).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Start' })).toBeNull();
  });

  it('offers resume for a paused session and start for a free station', () => {
    const { rerender } = render(<Tile station={running({ status: 'paused' })} venue={venue} at={0} now={0} />);
    expect(screen.getByRole('button', { name: 'Resume' })).toBeTruthy();
    expect(screen.getByRole('listitem').getAttribute('aria-label')).toBe('PC-01: Paused');
    rerender(<Tile station={{ ...running(), session: null, status: 'online' }} venue={venue} at={0} now={0} />);
    expect(screen.getByRole('button', { name: 'Start' })).toBeTruthy();
    expect(screen.getByRole('listitem').getAttribute('aria-label')).toBe('PC-01: Free');
  });
});
