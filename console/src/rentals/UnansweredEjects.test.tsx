import { cleanup, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { UnansweredEjects } from './RentalsPage';

afterEach(cleanup);

const eject = (commandId: string, assetLabel: string, slot: number) => ({
  commandId,
  rentalId: `r-${commandId}`,
  stationId: 'cab-a',
  slot,
  assetLabel,
  takenAt: '2026-12-05T10:00:00Z',
});

describe('ejects waiting for staff', () => {
  it('names each powerbank, its cabinet and slot, and settles one by what staff found', () => {
    const settle = vi.fn(async () => {});
    render(
      <UnansweredEjects
        ejects={[eject('c1', 'pb-001', 1), eject('c2', 'pb-002', 2)]}
        cabinet={(id) => (id === 'cab-a' ? 'Cabinet A' : '?')}
        canSettle
        settle={settle}
      />,
    );
    expect(screen.getByRole('heading', { name: 'Ejects waiting for you' })).toBeTruthy();
    const items = screen.getByTestId('unanswered-ejects').querySelectorAll('li');
    expect(items).toHaveLength(2);
    expect(items[0].textContent).toContain('pb-001 from Cabinet A, slot 1');
    fireEvent.click(screen.getByRole('button', { name: 'pb-002 is still in its slot' }));
    expect(settle).toHaveBeenCalledTimes(1);
    expect(settle).toHaveBeenCalledWith(expect.objectContaining({ commandId: 'c2' }), 'NOT_EJECTED');
    fireEvent.click(screen.getByRole('button', { name: 'pb-001 is gone' }));
    expect(settle).toHaveBeenLastCalledWith(expect.objectContaining({ commandId: 'c1' }), 'EJECTED');
  });

  it('shows staff without the manager role what waits, without the buttons they may not use', () => {
    render(<UnansweredEjects ejects={[eject('c1', 'pb-001', 1)]} cabinet={() => 'Cabinet A'} canSettle={false} settle={vi.fn()} />);
    expect(screen.getByTestId('unanswered-ejects').textContent).toContain('pb-001 from Cabinet A, slot 1');
    expect(screen.queryAllByRole('button')).toHaveLength(0);
    expect(screen.getByText(/tell an owner or manager/)).toBeTruthy();
  });
});
