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

/** The eject alerts after one staff-alert event: an announced eject joins (once) and goes when its answer is
 * announced (`rental.eject_answered`: settled on the rentals screen, or the cabinet answered after all); other
 * events change nothing. One may also be dismissed ([dismissEject]). */
export function openEjects(current: EjectAlert[], e: LiveEvent): EjectAlert[] {
  const d = (e.data ?? {}) as { command_id?: string; cabinet?: string; slot?: number | null; asset?: string | null };
  if (!d.command_id) return current;
  const id = d.command_id;
  switch (e.kind) {
    case 'rental.eject_unanswered':
      if (current.some((a) => a.id === id)) return current;
      return [...current, { id, cabinet: d.cabinet ?? '', slot: d.slot ?? null, asset: d.asset ?? null }];
    case 'rental.eject_answered':
      return current.some((a) => a.id === id) ? dismissEject(current, id) : current;
    default:
      return current;
  }
}

export function dismissEject(current: EjectAlert[], id: string): EjectAlert[] {
  return current.filter((a) => a.id !== id);
}
