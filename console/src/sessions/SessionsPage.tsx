import { useEffect, useState } from 'react';
import { request } from '../api/client';
import {
  SessionDetail,
  Sessions,
  SessionStatusValues,
  Stations,
  type SessionDetailResult,
  type SessionsResult,
  type SessionStatus,
} from '../api/generated';
import { money } from '../floor/model';
import { t } from '../i18n';

const when = (iso: string | null) => (iso ? new Date(iso).toLocaleString('en-GB') : '—');

/** Sessions, newest first, filtered by status; a session's detail with its cost lines and pauses. */
export function SessionsPage() {
  const [status, setStatus] = useState<SessionStatus | ''>('');
  const [rows, setRows] = useState<SessionsResult['sessions'] | null>(null);
  const [names, setNames] = useState<Record<string, string>>({});
  const [open, setOpen] = useState<string | null>(null);
  useEffect(() => {
    void request(Stations, {}).then((r) => setNames(Object.fromEntries(r.stations.map((s) => [s.id, s.name]))));
  }, []);
  useEffect(() => {
    setRows(null);
    void request(Sessions, { status: status || null, limit: 100 }).then((r) => setRows(r.sessions));
  }, [status]);
  return (
    <section aria-labelledby="sessions-title">
      <h1 id="sessions-title">{t.sessions.title}</h1>
      <label className="inline">
        {t.sessions.status}{' '}
        <select value={status} onChange={(e) => setStatus(e.target.value as SessionStatus | '')}>
          <option value="">{t.sessions.any}</option>
          {SessionStatusValues.map((s) => (
            <option key={s} value={s}>{s.toLowerCase().replace('_', ' ')}</option>
          ))}
        </select>
      </label>
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
      <button type="button" onClick={onClose}>{t.sessions.close}</button>
    </section>
  );
}
