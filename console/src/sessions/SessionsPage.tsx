import { useEffect, useState } from 'react';
import { request } from '../api/client';
import {
  SessionDetail,
  Sessions,
  SessionStatusValues,
  Stations,
  Venues,
  type SessionDetailResult,
  type SessionsResult,
  type SessionStatus,
  type StationsResult,
  type VenuesResult,
} from '../api/generated';
import { money } from '../floor/model';
import { t } from '../i18n';
import { dayStart, Period } from '../period';

const when = (iso: string | null) => (iso ? new Date(iso).toLocaleString('en-GB') : '—');

/** Sessions, newest first, filtered by status, venue, station and start date; a session's detail with its cost
 * lines, pauses, how it was paid, its money movements and its device commands. */
export function SessionsPage() {
  const [status, setStatus] = useState<SessionStatus | ''>('');
  const [venueId, setVenueId] = useState('');
  const [stationId, setStationId] = useState('');
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [rows, setRows] = useState<SessionsResult['sessions'] | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const [stations, setStations] = useState<StationsResult['stations']>([]);
  const [venues, setVenues] = useState<VenuesResult['venues']>([]);
  const [open, setOpen] = useState<string | null>(null);
  const names: Record<string, string> = Object.fromEntries(stations.map((s) => [s.id, s.name]));
  useEffect(() => {
    void request(Stations, {}).then((r) => setStations(r.stations));
    void request(Venues, {}).then((r) => setVenues(r.venues));
  }, []);
  useEffect(() => {
    // A later filter's answer wins even when an earlier one arrives after it.
    let current = true;
    setRows(null);
    setFailed(null);
    request(Sessions, {
      status: status || null,
      venueId: venueId || null,
      stationId: stationId || null,
      from: dayStart(from),
      to: dayStart(to),
      limit: 100,
    }).then(
      (r) => current && setRows(r.sessions),
      (e: unknown) => current && setFailed(e instanceof Error ? e.message : String(e)),
    );
    return () => {
      current = false;
    };
  }, [status, venueId, stationId, from, to]);
  return (
    <section aria-labelledby="sessions-title">
      <h1 id="sessions-title">{t.sessions.title}</h1>
      <fieldset className="filters">
        <legend>{t.sessions.filters}</legend>
        <label>
          {t.sessions.status}
          <select value={status} onChange={(e) => setStatus(e.target.value as SessionStatus | '')}>
            <option value="">{t.sessions.any}</option>
            {SessionStatusValues.map((s) => (
              <option key={s} value={s}>{s.toLowerCase().replace('_', ' ')}</option>
            ))}
          </select>
        </label>
        <label>
          {t.sessions.venue}
          <select value={venueId} onChange={(e) => { setVenueId(e.target.value); setStationId(''); }}>
            <option value="">{t.sessions.allVenues}</option>
            {venues.map((v) => (
              <option key={v.id} value={v.id}>{v.name}</option>
            ))}
          </select>
        </label>
        <label>
          {t.sessions.station}
          <select value={stationId} onChange={(e) => setStationId(e.target.value)}>
            <option value="">{t.sessions.allStations}</option>
            {stations.filter((s) => !venueId || s.venueId === venueId).map((s) => (
              <option key={s.id} value={s.id}>{s.name}</option>
            ))}
          </select>
        </label>
        <Period from={from} setFrom={setFrom} to={to} setTo={setTo} toLabel={t.sessions.to} />
      </fieldset>
      {failed && <p role="alert" className="error">{failed}</p>}
      {rows && rows.length === 0 && <p>{t.sessions.none}</p>}
      {rows && rows.length > 0 && (
        <table className="list">
          <thead>
            <tr>
              <th scope="col">{t.sessions.station}</th>
              <th scope="col">{t.sessions.status}</th>
              <th scope="col">{t.sessions.started}</th>
              <th scope="col">{t.sessions.ended}</th>
              <th scope="col" className="num">{t.sessions.charged}</th>
              <th scope="col"><span className="sr-only">{t.sessions.open}</span></th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.id}>
                <td>{names[s.stationId] ?? s.stationId}</td>
                <td>{s.status.toLowerCase()}</td>
                <td>{when(s.startedAt)}</td>
                <td>{when(s.endedAt)}</td>
                <td className="num">{money(s.chargedAmount, s.currency)}</td>
                <td>
                  <button type="button" onClick={() => setOpen(s.id)} aria-label={`${t.sessions.open}: ${names[s.stationId] ?? ''} ${when(s.startedAt)}`}>
                    {t.sessions.open}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {open && <Detail id={open} station={(rows ?? []).find((r) => r.id === open)?.stationId} names={names} onClose={() => setOpen(null)} />}
    </section>
  );
}

function Detail({ id, station, names, onClose }: { id: string; station?: string; names: Record<string, string>; onClose: () => void }) {
  const [s, setS] = useState<SessionDetailResult['session'] | null>(null);
  useEffect(() => {
    void request(SessionDetail, { id }).then((r) => setS(r.session));
  }, [id]);
  if (!s) return null;
  return (
    <section className="panel detail" aria-labelledby="session-detail">
      <h2 id="session-detail">
        {t.sessions.detail}: {station ? names[station] : ''} ({s.status.toLowerCase()})
      </h2>
      <p>
        {t.sessions.started} {when(s.startedAt)} · {t.sessions.ended} {when(s.endedAt)} · {t.sessions.origin} {s.origin}
        {s.energyWh > 0 && ` · ${t.sessions.energy} ${(s.energyWh / 1000).toFixed(2)} kWh`}
      </p>
      <h3>{t.sessions.lines}</h3>
      <table className="list">
        <tbody>
          {s.liveCost.lines.map((l, i) => (
            <tr key={i}>
              <td>{l.description}</td>
              <td className="num">{money(l.amount, s.liveCost.currency)}</td>
            </tr>
          ))}
          <tr className="total">
            <th scope="row">{t.setup.total}</th>
            <td className="num" data-testid="session-total">{money(s.liveCost.amount, s.liveCost.currency)}</td>
          </tr>
        </tbody>
      </table>
      {s.pauses.length > 0 && (
        <>
          <h3>{t.sessions.pauses}</h3>
          <ul>
            {s.pauses.map((p, i) => (
              <li key={i}>{when(p.from)} – {when(p.to)}</li>
            ))}
          </ul>
        </>
      )}
      <p>
        {t.sessions.paid}: <span data-testid="session-paid-by">{t.sessions.paidBy[s.paymentMethod] ?? s.paymentMethod}</span>
      </p>
      <h3>{t.sessions.money}</h3>
      <table className="list" data-testid="session-money">
        <thead>
          <tr>
            <th scope="col">{t.patrons.when}</th>
            <th scope="col">{t.sessions.journal}</th>
            <th scope="col">{t.sessions.account}</th>
            <th scope="col" className="num">{t.patrons.amount}</th>
          </tr>
        </thead>
        <tbody>
          {s.ledgerEntries.map((e, i) => (
            <tr key={i}>
              <td>{when(e.createdAt)}</td>
              <td>{e.memo || e.kind.replace(/_/g, ' ')}</td>
              <td>{`${e.ownerKind} ${e.purpose.replace(/_/g, ' ')}`}</td>
              <td className="num">{money(e.amount, e.currency)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>{t.sessions.device}</h3>
      {s.deviceCommands.length === 0 ? (
        <p>{t.sessions.noDevice}</p>
      ) : (
        <ol data-testid="session-device">
          {s.deviceCommands.map((c) => (
            <li key={c.id}>
              {when(c.createdAt)} · {c.command.replace(/_/g, ' ')}
            </li>
          ))}
        </ol>
      )}
      <button type="button" onClick={onClose}>{t.sessions.close}</button>
    </section>
  );
}
