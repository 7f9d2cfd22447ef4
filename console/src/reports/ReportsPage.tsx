import { useEffect, useRef, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import { newest } from '../api/newest';
import { Analytics, Debts, ExportCsv, Outlook, type AnalyticsResult, type DebtsResult, type Export, type OutlookResult } from '../api/generated';
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
  const [outlook, setOutlook] = useState<OutlookResult['revenueProjection'] | null>(null);
  // Debts are a patron's, not a venue's: only members who see every venue get them (others are refused).
  const [debts, setDebts] = useState<DebtsResult['analytics']['debtsOutstanding'] | null>(null);
  useEffect(() => {
    void request(Outlook, { days: 7 }).then((r) => setOutlook(r.revenueProjection));
    request(Debts, { from: isoDay(new Date()), to: isoDay(new Date()) }).then(
      (r) => setDebts(r.analytics.debtsOutstanding),
      () => setDebts(null),
    );
  }, []);
  // Each change of a date asks again; an answer for an earlier period that comes after a later one is dropped.
  const order = useRef(newest()).current;
  useEffect(() => {
    setError(null);
    const n = order.ask();
    request(Analytics, { from, to })
      .then((r) => {
        if (order.fresher(n)) setData(r.analytics);
      })
      .catch((e) => {
        if (order.fresher(n)) setError(e instanceof ApiError ? e.message : t.errors.generic);
      });
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
          <div className="columns">
            <Amounts title={t.reports.byKind} rows={data.revenueByStationKind.map((r) => [r.stationKind.toLowerCase().replace(/_/g, ' '), money(r.amount, r.currency)])} />
            <Amounts title={t.reports.byMethod} rows={data.revenueByPaymentMethod.map((r) => [r.paymentMethod, money(r.amount, r.currency)])} />
          </div>
          <h2>{t.reports.daily}</h2>
          <table className="list" data-testid="daily">
            <thead>
              <tr>
                <th scope="col">{t.reports.day}</th>
                <th scope="col" className="num">{t.reports.sessions}</th>
                <th scope="col" className="num">{t.reports.average}</th>
                <th scope="col" className="num">{t.reports.energy}</th>
                <th scope="col" className="num">{t.reports.usage}</th>
                <th scope="col" className="num">{t.reports.revenue}</th>
              </tr>
            </thead>
            <tbody>
              {data.dailyMetrics.filter((d) => d.sessions > 0 || d.revenue.length > 0).map((d) => (
                <tr key={d.day}>
                  <td>{d.day}</td>
                  <td className="num">{d.sessions}</td>
                  <td className="num">{clock(d.averageDurationSecs)}</td>
                  <td className="num">{(d.energyWh / 1000).toFixed(1)} kWh</td>
                  <td className="num">{Math.round(d.utilisation * 100)} %</td>
                  <td className="num">{d.revenue.map((r) => money(r.amount, r.currency)).join(', ') || '—'}</td>
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
      {outlook && (
        <>
          <h2>{t.reports.outlook}</h2>
          <p className="note">{t.reports.outlookBasis(outlook.basisFrom, outlook.basisTo)}</p>
          {outlook.days.length === 0 && <p>{t.reports.noBasis}</p>}
          <table className="list" data-testid="outlook">
            <tbody>
              {outlook.days.map((d) => (
                <tr key={`${d.day}-${d.currency}`}>
                  <td>{d.day}</td>
                  <td className="num">{money(d.amount, d.currency)}</td>
                </tr>
              ))}
              {outlook.totals.map((d) => (
                <tr key={d.currency} className="total">
                  <th scope="row">{t.reports.projectedTotal}</th>
                  <td className="num">{money(d.amount, d.currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {debts && (
        <>
          <h2>{t.reports.debts}</h2>
          {debts.length === 0 && <p>{t.reports.noDebts}</p>}
          {debts.map((d) => (
            <div key={d.currency}>
              <p>{t.reports.debtLine(money(d.total, d.currency), d.patrons)}</p>
              <Amounts title="" rows={d.largest.map((p) => [p.displayName, money(p.owed, d.currency)])} />
            </div>
          ))}
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

function Amounts({ title, rows }: { title: string; rows: [string, string][] }) {
  return (
    <div>
      {title && <h2>{title}</h2>}
      <table className="list">
        <tbody>
          {rows.map(([label, amount], i) => (
            <tr key={i}>
              <td>{label}</td>
              <td className="num">{amount}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
