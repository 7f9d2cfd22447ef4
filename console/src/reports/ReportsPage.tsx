import { useEffect, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import { Analytics, ExportCsv, type AnalyticsResult, type Export } from '../api/generated';
import { clock, money } from '../floor/model';
import { t } from '../i18n';
import { bars, everyDay, heat } from './chart';

const isoDay = (d: Date) => d.toISOString().slice(0, 10);

/** Revenue, sessions, utilisation and top patrons of a period (the analytics rollups), and CSV exports. */
export function ReportsPage() {
  const [to, setTo] = useState(() => isoDay(new Date()));
  const [from, setFrom] = useState(() => isoDay(new Date(Date.now() - 29 * 86_400_000)));
  const [data, setData] = useState<AnalyticsResult['analytics'] | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setError(null);
    request(Analytics, { from, to })
      .then((r) => setData(r.analytics))
      .catch((e) => setError(e instanceof ApiError ? e.message : t.errors.generic));
  }, [from, to]);
  const download = async (what: Export) => {
    setError(null);
    try {
      const r = await request(ExportCsv, { what, from: `${from}T00:00:00Z`, to: `${to}T23:59:59Z` });
      const url = URL.createObjectURL(new Blob([r.exportCsv], { type: 'text/csv' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = `${what.toLowerCase()}-${from}-${to}.csv`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : t.errors.generic);
    }
  };
  const revenue = data?.revenueByDay ?? [];
  const currency = revenue[0]?.currency ?? data?.revenueByVenue[0]?.currency ?? 'EUR';
  const chart = bars(everyDay(from, to, revenue.filter((r) => r.currency === currency)), 600, 160);
  return (
    <section aria-labelledby="reports-title">
      <h1 id="reports-title">{t.reports.title}</h1>
      <div className="floor-head">
        <label>
          {t.reports.from}
          <input type="date" value={from} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label>
          {t.reports.to}
          <input type="date" value={to} onChange={(e) => setTo(e.target.value)} />
        </label>
      </div>
      <p className="note">{t.reports.note}</p>
      {error && <p role="alert" className="error">{error}</p>}
      {data && (
        <>
          <h2>{t.reports.revenue}</h2>
          {revenue.length === 0 ? (
            <p>{t.reports.noRevenue}</p>
          ) : (
            <svg className="chart" viewBox="0 0 600 180" role="img" aria-label={t.reports.revenue}>
              {chart.filter((b) => b.height > 0).map((b) => (
                <rect key={b.day} x={b.x} y={b.y} width={b.width} height={b.height} fill="#0b5cad">
                  <title>{`${b.day}: ${money(b.amount, currency)}`}</title>
                </rect>
              ))}
            </svg>
          )}
          <dl className="wallet">
            <dt>{t.reports.sessions}</dt>
            <dd data-testid="sessions-count">{data.sessions.sessions}</dd>
            <dt>{t.reports.average}</dt>
            <dd>{clock(data.sessions.averageDurationSecs)}</dd>
            <dt>{t.reports.energy}</dt>
            <dd>{(data.sessions.energyWh / 1000).toFixed(1)} kWh</dd>
          </dl>
          <h2>{t.reports.byVenue}</h2>
          <table className="list">
            <tbody>
              {data.revenueByVenue.map((v) => (
                <tr key={`${v.venueId}-${v.currency}`}>
                  <td>{v.venueName}</td>
                  <td className="num">{money(v.amount, v.currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>{t.reports.utilisation}</h2>
          <table className="heat">
            <thead>
              <tr>
                <td />
                {Array.from({ length: 24 }, (_, h) => (
                  <th key={h} scope="col">{h}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {t.reports.days.map((name, d) => (
                <tr key={name}>
                  <th scope="row">{name}</th>
                  {Array.from({ length: 24 }, (_, h) => {
                    const share = data.utilisation.find((c) => c.dayOfWeek === d + 1 && c.hour === h)?.share ?? 0;
                    return (
                      <td key={h} style={{ background: heat(share) }} title={`${name} ${h}:00 ${Math.round(share * 100)} %`}>
                        <span className="sr-only">{Math.round(share * 100)} %</span>
                      </td>
                    );
                  })}
                </tr>
              ))}
            </tbody>
          </table>
          <h2>{t.reports.top}</h2>
          <table className="list">
            <tbody>
              {data.topPatrons.map((p) => (
                <tr key={`${p.patronId}-${p.currency}`}>
                  <td>{p.displayName}</td>
                  <td className="num">{p.sessions}</td>
                  <td className="num">{money(p.spent, p.currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h2>{t.reports.export}</h2>
      <div className="actions">
        <button type="button" onClick={() => download('SESSIONS')}>{t.reports.exportSessions}</button>
        <button type="button" onClick={() => download('PAYMENTS')}>{t.reports.exportPayments}</button>
        <button type="button" onClick={() => download('LEDGER')}>{t.reports.exportLedger}</button>
      </div>
    </section>
  );
}
