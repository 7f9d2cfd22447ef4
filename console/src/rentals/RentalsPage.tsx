import { useEffect, useRef, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import { newest } from '../api/newest';
import {
  CabinetAssets,
  Cabinets,
  DockAsset,
  LiveEvents,
  QuoteRental,
  SettleEject,
  StartRental,
  StopRental,
  type CabinetAssetsResult,
  type CabinetsResult,
  type QuoteRentalResult,
} from '../api/generated';
import { subscribe } from '../api/live';
import { money } from '../floor/model';
import { t } from '../i18n';
import { usePatronSearch } from '../patrons/search';
import { Outcome, Panel, Text, useSubmit } from '../ui';

type Cabinet = CabinetsResult['stations'][number];
type Unanswered = CabinetsResult['unansweredEjects'][number];
type Finding = 'EJECTED' | 'NOT_EJECTED';
type Assets = Record<string, CabinetAssetsResult['assets']>;

const when = (iso: string) => new Date(iso).toLocaleString('en-GB');

/** Powerbank cabinets and rentals: each cabinet's slots (what it reports, what is docked), docking a powerbank,
 * renting one to a patron from a quote, and the running rentals, returned to any cabinet; above them the ejects waiting
 * for staff, which owners and managers settle. Reloaded on live events. */
export function RentalsPage({ canSettle }: { canSettle: boolean }) {
  const [data, setData] = useState<CabinetsResult | null>(null);
  const [assets, setAssets] = useState<Assets>({});
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const order = useRef(newest()).current;
  const load = async () => {
    const n = order.ask();
    const r = await request(Cabinets, {});
    const pairs = await Promise.all(r.stations.map(async (c) => [c.id, (await request(CabinetAssets, { stationId: c.id })).assets] as const));
    if (!order.fresher(n)) return;
    setData(r);
    setAssets(Object.fromEntries(pairs));
  };
  useEffect(() => {
    void load();
    // An eject that comes to wait for staff is announced too (`rental.eject_unanswered`, by the workers).
    return subscribe(LiveEvents, {}, { next: () => void load() });
  }, []);
  if (!data) return null;
  const cabinets = data.stations;
  const name = (id: string) => cabinets.find((c) => c.id === id)?.name ?? '';
  const rentals = data.sessions.filter((s) => cabinets.some((c) => c.id === s.stationId));

  return (
    <section aria-labelledby="rentals-title">
      <h1 id="rentals-title">{t.rentals.title}</h1>
      {error && <p role="alert" className="error">{error}</p>}
      {note && <p role="status" className="saved">{note}</p>}
      {cabinets.length === 0 && <p>{t.rentals.noCabinets}</p>}
      <ul className="tiles">
        {cabinets.map((c) => (
          <CabinetCard key={c.id} cabinet={c} assets={assets[c.id] ?? []} reload={load} />
        ))}
      </ul>
      {data.unansweredEjects.length > 0 && (
        <UnansweredEjects
          ejects={data.unansweredEjects}
          cabinet={name}
          canSettle={canSettle}
          settle={async (e, finding) => {
            setError(null);
            setNote(null);
            try {
              await request(SettleEject, { commandId: e.commandId, finding });
              const label = e.assetLabel ?? '';
              setNote(finding === 'EJECTED' ? t.rentals.settledGone(label) : t.rentals.settledThere(label));
            } catch (err) {
              setError(err instanceof ApiError ? err.message : t.errors.generic);
            }
            await load();
          }}
        />
      )}
      <Panel title={t.rentals.running}>
        {rentals.length === 0 ? (
          <p>{t.rentals.none}</p>
        ) : (
          <table className="list" data-testid="rentals">
            <thead>
              <tr>
                <th scope="col">{t.rentals.patron}</th>
                <th scope="col">{t.rentals.powerbank}</th>
                <th scope="col">{t.rentals.from}</th>
                <th scope="col">{t.rentals.since}</th>
                <th scope="col" className="num">{t.rentals.cost}</th>
                <th scope="col">{t.rentals.returnTo}</th>
              </tr>
            </thead>
            <tbody>
              {rentals.map((r) => (
                <tr key={r.id}>
                  <td>{r.patronName ?? t.rentals.walkIn}</td>
                  <td>{r.assetLabel ?? '—'}</td>
                  <td>{name(r.stationId)}</td>
                  <td>{when(r.startedAt)}</td>
                  <td className="num">{money(r.liveCost.amount, r.currency)}</td>
                  <td>
                    <ReturnForm
                      label={r.assetLabel ?? ''}
                      cabinets={cabinets}
                      onReturn={async (stationId) => {
                        setError(null);
                        setNote(null);
                        try {
                          const done = await request(StopRental, { rentalId: r.id, stationId });
                          setNote(t.rentals.returned(r.assetLabel ?? '', name(stationId), money(done.stopRental.chargedAmount, r.currency)));
                        } catch (e) {
                          setError(e instanceof ApiError ? e.message : t.errors.generic);
                        }
                        await load();
                      }}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Panel>
      {cabinets.length > 0 && <Rent cabinets={cabinets} assets={assets} onRented={load} />}
    </section>
  );
}

function CabinetCard({ cabinet: c, assets, reload }: { cabinet: Cabinet; assets: CabinetAssetsResult['assets']; reload: () => Promise<void> }) {
  const free = c.connectors.filter((s) => !assets.some((a) => a.slot === s.number));
  const [slot, setSlot] = useState('');
  const [label, setLabel] = useState('');
  const [error, saved, submit] = useSubmit();
  const chosen = slot || String(free[0]?.number ?? '');
  return (
    <li className="tile" aria-label={c.name}>
      <h2>{c.name}</h2>
      <p>{t.rentals.cabinetLine(c.control.toLowerCase(), c.status.toLowerCase())}</p>
      <ul className="slots">
        {c.connectors.map((s) => {
          const docked = assets.find((a) => a.slot === s.number);
          const reported = s.reportedAsset ? ` · ${t.rentals.reports(s.reportedAsset, s.battery, s.charging)}` : '';
          return (
            <li key={s.number}>
              {t.rentals.slot(s.number)}: {docked ? docked.label : t.rentals.empty}
              {reported}
            </li>
          );
        })}
      </ul>
      {free.length > 0 && (
        <form
          onSubmit={submit(t.rentals.dock, async () => {
            await request(DockAsset, { stationId: c.id, slot: Number(chosen), label: label.trim() });
            setLabel('');
            await reload();
          })}
        >
          <label>
            {t.rentals.slotLabel}
            <select value={chosen} onChange={(e) => setSlot(e.target.value)}>
              {free.map((s) => (
                <option key={s.number} value={s.number}>{s.number}</option>
              ))}
            </select>
          </label>
          <Text label={t.rentals.label} value={label} set={setLabel} />
          <button type="submit">{t.rentals.dockSubmit}</button>
          <Outcome error={error} saved={saved} />
        </form>
      )}
    </li>
  );
}

/** Ejects a bridge took and never answered: staff look at the slot and say what they found. */
export function UnansweredEjects({
  ejects,
  cabinet,
  canSettle,
  settle,
}: {
  ejects: Unanswered[];
  cabinet: (id: string) => string;
  /** Owners and managers settle them; staff only see them. */
  canSettle: boolean;
  settle: (e: Unanswered, finding: Finding) => Promise<void>;
}) {
  return (
    <Panel title={t.rentals.unanswered}>
      <p>{canSettle ? t.rentals.unansweredHelp : t.rentals.unansweredForStaff}</p>
      <ul data-testid="unanswered-ejects">
        {ejects.map((e) => {
          const label = e.assetLabel ?? '—';
          return (
            <li key={e.commandId}>
              {t.rentals.unansweredLine(label, cabinet(e.stationId), e.slot, when(e.takenAt))}
              {canSettle && (
                <>
                  {' '}
                  <button type="button" onClick={() => void settle(e, 'EJECTED')}>{t.rentals.gone(label)}</button>{' '}
                  <button type="button" onClick={() => void settle(e, 'NOT_EJECTED')}>{t.rentals.stillThere(label)}</button>
                </>
              )}
            </li>
          );
        })}
      </ul>
    </Panel>
  );
}

function ReturnForm({ label, cabinets, onReturn }: { label: string; cabinets: Cabinet[]; onReturn: (stationId: string) => Promise<void> }) {
  const [to, setTo] = useState(cabinets[0]?.id ?? '');
  return (
    <form
      className="inline-form"
      onSubmit={(e) => {
        e.preventDefault();
        void onReturn(to);
      }}
    >
      <label className="inline">
        <span className="sr-only">{t.rentals.returnOf(label)}</span>
        <select value={to} onChange={(e) => setTo(e.target.value)}>
          {cabinets.map((c) => (
            <option key={c.id} value={c.id}>{c.name}</option>
          ))}
        </select>
      </label>
      <button type="submit" aria-label={t.rentals.returnOf(label)}>{t.rentals.returnSubmit}</button>
    </form>
  );
}

/** A staff-run rental: the patron, the cabinet, the quote (price, free minutes, deposit), then the start. */
function Rent({ cabinets, assets, onRented }: { cabinets: Cabinet[]; assets: Assets; onRented: () => Promise<void> }) {
  const [search, setSearch] = useState('');
  const [patron, setPatron] = useState('');
  const { found, chosen } = usePatronSearch(search, patron);
  const [cabinet, setCabinet] = useState(cabinets[0].id);
  const [quote, setQuote] = useState<QuoteRentalResult['quote'] | null>(null);
  // One key per rental: a double click or a retry starts it once.
  const [key, setKey] = useState(() => crypto.randomUUID());
  const [error, saved, submit] = useSubmit();
  const docked = (assets[cabinet] ?? []).length;
  return (
    <Panel title={t.rentals.rent}>
      <form
        onSubmit={submit(t.rentals.rent, async () => {
          if (!quote) {
            setQuote((await request(QuoteRental, { patronId: chosen, stationId: cabinet })).quote);
            return;
          }
          await request(StartRental, { quoteId: quote.id, idempotencyKey: key });
          setQuote(null);
          setKey(crypto.randomUUID());
          await onRented();
        })}
      >
        <label>
          {t.rentals.findPatron}
          <input type="search" value={search} onChange={(e) => { setSearch(e.target.value); setQuote(null); }} />
        </label>
        <label>
          {t.rentals.patron}
          <select value={chosen} onChange={(e) => { setPatron(e.target.value); setQuote(null); }} required>
            {found.map((p) => (
              <option key={p.id} value={p.id}>{p.displayName}</option>
            ))}
          </select>
        </label>
        <label>
          {t.rentals.cabinet}
          <select value={cabinet} onChange={(e) => { setCabinet(e.target.value); setQuote(null); }}>
            {cabinets.map((c) => (
              <option key={c.id} value={c.id}>{c.name}</option>
            ))}
          </select>
        </label>
        <p>{t.rentals.docked(docked)}</p>
        {quote && (
          <p data-testid="quote">
            {t.rentals.quote(money(quote.pricePerHour, quote.currency), quote.freePeriodMin, money(quote.deposit, quote.currency))}
          </p>
        )}
        <button type="submit" disabled={!chosen}>{quote ? t.rentals.start : t.rentals.getQuote}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}
