// The live floor's arithmetic, apart from React so it is tested alone: the tiles as the dashboard snapshot gives them,
// and the remaining time and cost ticking between snapshots.

import { t } from '../i18n';

export type RunningSession = {
  session_id: string;
  status: 'active' | 'paused';
  patron_id: string;
  patron_name: string;
  started_at: string;
  planned_end_at: string | null;
  remaining_seconds: number | null;
  running_cost: number;
  cost_in_a_minute: number;
};

export type StationTile = {
  station_id: string;
  name: string;
  kind: string;
  status: 'offline' | 'online' | 'in_session' | 'maintenance';
  session: RunningSession | null;
  rentals_running: number;
  /** What the station's device last reported through the venue's bridge. */
  device?: DeviceReport | null;
};

export type DeviceReport = {
  kind: string;
  reachable: boolean | null;
  on: boolean | null;
  power_w: number | null;
  reported_at: string;
};

/** A device's latest report in a few words: unreachable, on or off, the power drawn; a PC agent connected or not;
 * other events by their kind. */
export function deviceLine(d: DeviceReport): { text: string; problem: boolean } {
  if (d.kind === 'agent_state' && d.reachable !== null) {
    return d.reachable ? { text: t.floor.agentConnected, problem: false } : { text: t.floor.agentGone, problem: true };
  }
  if (d.reachable === false) return { text: t.floor.deviceUnreachable, problem: true };
  if (d.kind === 'cabinet_state') return { text: t.floor.cabinetReported, problem: false };
  const parts: string[] = [];
  if (d.on !== null) parts.push(d.on ? t.floor.powerOn : t.floor.powerOff);
  if (d.power_w !== null) parts.push(`${d.power_w} W`);
  // A report that says only that the device answers (a cabinet's status).
  if (parts.length === 0 && d.reachable === true) return { text: t.floor.deviceAnswering, problem: false };
  if (parts.length === 0) parts.push(d.kind.replace(/_/g, ' '));
  return { text: t.floor.device(parts.join(', ')), problem: false };
}

export type VenueTile = {
  venue_id: string;
  name: string;
  currency: string;
  busy: number;
  stations: StationTile[];
};

export type Snapshot = { generated_at: string; venues: VenueTile[] };

/** Seconds left at `now` (ms): counted down from the planned end; null for an open-ended session. A paused session
 * keeps what it had. */
export function remainingAt(s: RunningSession, generatedAt: number, now: number): number | null {
  if (s.remaining_seconds === null) return null;
  if (s.status === 'paused') return s.remaining_seconds;
  const elapsed = Math.max(0, (now - generatedAt) / 1000);
  return Math.max(0, Math.floor(s.remaining_seconds - elapsed));
}

/** The cost at `now` (ms), in minor units: between the snapshot's cost and its cost a minute on, by the time passed
 * since the snapshot (the server prices both with the session's own tariff; a paused session does not move). */
export function costAt(s: RunningSession, generatedAt: number, now: number): number {
  if (s.status === 'paused') return s.running_cost;
  const f = Math.min(1, Math.max(0, (now - generatedAt) / 60_000));
  return Math.round(s.running_cost + (s.cost_in_a_minute - s.running_cost) * f);
}

/** The warning a tile shows: 5 and 1 minutes before the planned end. */
export function warning(remaining: number | null): 'warn1' | 'warn5' | null {
  if (remaining === null) return null;
  if (remaining <= 60) return 'warn1';
  if (remaining <= 300) return 'warn5';
  return null;
}

// The server's minor units per currency (its ledger's), once signed in: the browser's locale data disagrees for some
// currencies (HUF, IDR, COP … have 2 in ISO 4217 and the server's ledger, 0 in many browsers).
const known = new Map<string, number>();

/** Takes the server's minor units per currency (from `currencies`). */
export function knowCurrencies(list: { code: string; minorUnits: number }[]) {
  for (const c of list) known.set(c.code, c.minorUnits);
}

/** How many decimal places a currency's minor unit has (EUR 2, JPY 0, KWD 3): the server's, else the browser's. */
export function minorDigits(currency: string): number {
  const digits = known.get(currency);
  if (digits !== undefined) return digits;
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits ?? 2;
  } catch {
    return 2;
  }
}

/** Minor units as money: 1234 EUR → "€12.34". */
export function money(amount: number, currency: string, locale = 'en'): string {
  const digits = minorDigits(currency);
  try {
    return new Intl.NumberFormat(locale, { style: 'currency', currency }).format(amount / 10 ** digits);
  } catch {
    return `${(amount / 10 ** digits).toFixed(digits)} ${currency}`;
  }
}

/** 754 → "12:34"; 3754 → "1:02:34". */
export function clock(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const mm = h > 0 ? String(m).padStart(2, '0') : String(m);
  return `${h > 0 ? `${h}:` : ''}${mm}:${String(s).padStart(2, '0')}`;
}
