export type SosAlert = { id: string; status: 'raised' | 'acknowledged'; location: string; note: string; raisedAt: string };

type LiveEvent = { kind: string; subjectId?: string | null; data: unknown };

/** The open SOS list after one staff-alert event: raised ones join, acknowledged ones change, resolved ones go.
 * Events of tasks, and repeats, change nothing. */
export function openSos(current: SosAlert[], e: LiveEvent): SosAlert[] {
  if (!e.kind.startsWith('sos.') || !e.subjectId) return current;
  const id = e.subjectId;
  const d = (e.data ?? {}) as { location?: string; note?: string; raised_at?: string };
  switch (e.kind) {
    case 'sos.raised':
      if (current.some((a) => a.id === id)) return current;
      return [...current, { id, status: 'raised', location: d.location ?? '', note: d.note ?? '', raisedAt: d.raised_at ?? '' }];
    case 'sos.acknowledged':
    case 'sos.responded':
      return current.map((a) => (a.id === id ? { ...a, status: 'acknowledged' } : a));
    case 'sos.resolved':
      return current.filter((a) => a.id !== id);
    default:
      return current;
  }
}

/** An eject that came to wait for staff (`rental.eject_unanswered`): a bridge took it and nothing answered. */
export type EjectAlert = { id: string; cabinet: string; slot: number | null; asset: string | null };

/** The eject alerts after one staff-alert event: an announced eject joins (once); other events change nothing. They
 * go when dismissed ([dismissEject]); the rentals screen is where they are settled. */
export function openEjects(current: EjectAlert[], e: LiveEvent): EjectAlert[] {
  if (e.kind !== 'rental.eject_unanswered') return current;
  const d = (e.data ?? {}) as { command_id?: string; cabinet?: string; slot?: number | null; asset?: string | null };
  if (!d.command_id || current.some((a) => a.id === d.command_id)) return current;
  return [...current, { id: d.command_id, cabinet: d.cabinet ?? '', slot: d.slot ?? null, asset: d.asset ?? null }];
}

export function dismissEject(current: EjectAlert[], id: string): EjectAlert[] {
  return current.filter((a) => a.id !== id);
}
