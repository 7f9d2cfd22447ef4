import { useEffect, useMemo, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import {
  Dashboard,
  ExtendSession,
  FindPatrons,
  PauseSession,
  ResumeSession,
  StartSession,
  StopSession,
  type FindPatronsResult,
} from '../api/generated';
import { subscribe } from '../api/live';
import { t } from '../i18n';
import { clock, costAt, deviceLine, money, remainingAt, warning, type Snapshot, type StationTile, type VenueTile } from './model';

/** The live floor: every station of a venue as a tile, pushed by the `dashboard` subscription; the clock and the
 * cost tick every second between snapshots. */
export function FloorPage() {
  const [snapshot, setSnapshot] = useState<{ data: Snapshot; at: number } | null>(null);
  const [connected, setConnected] = useState(false);
  const [venueId, setVenueId] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now());

  useEffect(
    () =>
      subscribe(Dashboard, {}, {
        next: (d) => setSnapshot({ data: d.dashboard.dashboard as Snapshot, at: Date.now() }),
        status: setConnected,
      }),
    [],
  );
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);

  const venues = snapshot?.data.venues ?? [];
  const venue = venues.find((v) => v.venue_id === venueId) ?? venues[0];

  if (!snapshot || !venue) {
    return (
      <section aria-labelledby="floor-title">
        <h1 id="floor-title">{t.floor.title}</h1>
        {snapshot ? <p>{t.floor.noVenues}</p> : <p role="status">{t.floor.loading}</p>}
      </section>
    );
  }
  return (
    <section aria-labelledby="floor-title">
      <div className="floor-head">
        <h1 id="floor-title">{t.floor.title}</h1>
        {venues.length > 1 && (
          <label>
            {t.floor.venue}{' '}
            <select value={venue.venue_id} onChange={(e) => setVenueId(e.target.value)}>
              {venues.map((v) => (
                <option key={v.venue_id} value={v.venue_id}>
                  {v.name}
                </option>
              ))}
            </select>
          </label>
        )}
        <span className={connected ? 'live on' : 'live'} role="status">
          {connected ? t.floor.live : t.floor.reconnecting}
        </span>
        <span>{t.floor.busyCount(venue.busy, venue.stations.length)}</span>
      </div>
      <ul className="tiles" aria-label={venue.name}>
        {venue.stations.map((s) => (
          <Tile key={s.station_id} station={s} venue={venue} at={snapshot.at} now={now} />
        ))}
      </ul>
    </section>
  );
}

function statusText(s: StationTile): string {
  if (s.session?.status === 'paused') return t.floor.paused;
  if (s.session) return t.floor.busy;
  if (s.status === 'offline') return t.floor.offline;
  if (s.status === 'maintenance') return t.floor.maintenance;
  return t.floor.free;
}

export function Tile({ station, venue, at, now }: { station: StationTile; venue: VenueTile; at: number; now: number }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [starting, setStarting] = useState(false);
  const s = station.session;
  const remaining = s ? remainingAt(s, at, now) : null;
  const warn = warning(remaining);
  const act = async (f: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : t.errors.generic);
    } finally {
      setBusy(false);
    }
  };
  const label = `${station.name}: ${statusText(station)}`;
  return (
    <li className={`tile ${s ? 'busy' : 'free'} ${station.status} ${warn ?? ''}`} aria-label={label} data-station={station.station_id}>
      <h2>{station.name}</h2>
      <p className="kind">{station.kind.replace(/_/g, ' ')}</p>
      <p className="state">
        <span className={`dot ${station.status}`} aria-hidden="true" /> {statusText(station)}
        {s && station.status === 'offline' && ` · ${t.floor.offline}`}
      </p>
      {station.device && (
        <p className={deviceLine(station.device).problem ? 'device problem' : 'device'} title={new Date(station.device.reported_at).toLocaleString('en-GB')}>
          {deviceLine(station.device).text}
        </p>
      )}
      {s && (
        <div className="session">
          <p className="patron">{s.patron_name}</p>
          <p className="remaining" aria-label={t.floor.remaining}>
            {remaining === null ? t.floor.openEnded : `${clock(remaining)} ${t.floor.remaining}`}
          </p>
          <p className="cost">
            {t.floor.cost}: <output>{money(costAt(s, at, now), venue.currency)}</output>
          </p>
          {warn && <p className="warning" role="alert">{t.floor[warn]}</p>}
        </div>
      )}
      {error && <p role="alert" className="error">{error}</p>}
      <div className="actions">
        {s ? (
          <>
            <button type="button" disabled={busy} onClick={() => act(() => request(ExtendSession, { id: s.session_id, minutes: 15, idempotencyKey: crypto.randomUUID() }))}>
              {t.floor.extend} +15
            </button>
            {s.status === 'paused' ? (
              <button type="button" disabled={busy} onClick={() => act(() => request(ResumeSession, { id: s.session_id }))}>
                {t.floor.resume}
              </button>
            ) : (
              <button type="button" disabled={busy} onClick={() => act(() => request(PauseSession, { id: s.session_id }))}>
                {t.floor.pause}
              </button>
            )}
            <button type="button" className="danger" disabled={busy} onClick={() => act(() => request(StopSession, { id: s.session_id }))}>
              {t.floor.stop}
            </button>
          </>
        ) : (
          <button type="button" disabled={busy || station.status === 'maintenance'} onClick={() => setStarting(true)}>
            {t.floor.start}
          </button>
        )}
      </div>
      {starting && (
        <StartForm
          station={station}
          onDone={() => setStarting(false)}
          start={(input) => act(() => request(StartSession, { input, idempotencyKey: crypto.randomUUID() }))}
        />
      )}
    </li>
  );
}

type Patron = FindPatronsResult['patrons'][number];

/** Starts a session on a station: walk-in cash or a patron's wallet (found by search), for some minutes. */
export function StartForm(props: {
  station: Pick<StationTile, 'station_id' | 'name'>;
  onDone: () => void;
  start: (input: { stationId: string; patronId?: string; durationMinutes?: number; payment: 'CASH' | 'WALLET' }) => Promise<void>;
}) {
  const [payment, setPayment] = useState<'CASH' | 'WALLET'>('CASH');
  const [minutes, setMinutes] = useState('60');
  const [search, setSearch] = useState('');
  const [patrons, setPatrons] = useState<Patron[]>([]);
  const [patron, setPatron] = useState<string>('');
  const id = useMemo(() => `start-${props.station.station_id}`, [props.station.station_id]);
  useEffect(() => {
    if (payment !== 'WALLET') return;
    const timer = setTimeout(async () => {
      const r = await request(FindPatrons, { search: search || null }).catch(() => null);
      setPatrons(r?.patrons ?? []);
    }, 250);
    return () => clearTimeout(timer);
  }, [search, payment]);
  return (
    <form
      className="start"
      aria-labelledby={`${id}-title`}
      onSubmit={async (e) => {
        e.preventDefault();
        const n = Number.parseInt(minutes, 10);
        await props.start({
          stationId: props.station.station_id,
          payment,
          durationMinutes: Number.isFinite(n) && n > 0 ? n : undefined,
          patronId: payment === 'WALLET' ? patron || undefined : undefined,
        });
        props.onDone();
      }}
    >
      <p id={`${id}-title`}>
        {t.floor.chooseStation} {props.station.name}
      </p>
      <fieldset>
        <legend className="sr-only">{t.floor.start}</legend>
        <label>
          <input type="radio" name={`${id}-pay`} checked={payment === 'CASH'} onChange={() => setPayment('CASH')} /> {t.floor.walkIn}
        </label>
        <label>
          <input type="radio" name={`${id}-pay`} checked={payment === 'WALLET'} onChange={() => setPayment('WALLET')} /> {t.floor.wallet}
        </label>
      </fieldset>
      {payment === 'WALLET' && (
        <>
          <label>
            {t.floor.patronSearch}
            <input type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
          </label>
          <select aria-label={t.floor.wallet} value={patron} onChange={(e) => setPatron(e.target.value)} required>
            <option value="">—</option>
            {patrons.map((p) => (
              <option key={p.id} value={p.id}>
                {p.displayName}
                {p.email ? ` (${p.email})` : ''}
              </option>
            ))}
          </select>
        </>
      )}
      <label>
        {t.floor.minutes}
        <input type="number" min={1} max={1440} value={minutes} onChange={(e) => setMinutes(e.target.value)} required={payment === 'CASH'} />
      </label>
      <div className="actions">
        <button type="submit">{t.floor.confirm}</button>
        <button type="button" onClick={props.onDone}>
          {t.floor.cancel}
        </button>
      </div>
    </form>
  );
}
