import { useEffect, useRef, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import { newest } from '../api/newest';
import {
  CreateTariff,
  PricePreview,
  StationKindValues,
  UpdateTariff,
  VenuePrices,
  type PricePreviewResult,
  type StationKind,
  type VenuePricesResult,
} from '../api/generated';
import { money } from '../floor/model';
import { t } from '../i18n';
import { Outcome, Panel, Text, useSubmit } from '../ui';
import { toMinor } from './money';
import { draftOf, NEW, rebase, summary, termsOf, type Draft } from './terms';

type Venue = { id: string; currency: string; timezone: string };
type Price = NonNullable<VenuePricesResult['venue']>['prices'][number];

function TermsFields({ draft, set, currency }: { draft: Draft; set: (d: Draft) => void; currency: string }) {
  const field = (key: keyof Omit<Draft, 'pausable'>) => (v: string) => set({ ...draft, [key]: v });
  // Time is billed by the minute: an hourly price that is no whole number of minor units a minute is charged as the
  // nearest that is, and the form says so.
  const typed = toMinor(draft.perHour, currency);
  const charged = Math.round(typed / 60) * 60;
  return (
    <>
      <Text label={`${t.setup.perHour} (${currency})`} value={draft.perHour} set={field('perHour')} type="number" step="0.01" min={0} />
      {charged !== typed && <p className="note" role="status">{t.setup.chargedAs(money(charged, currency))}</p>}
      <Text label={`${t.setup.perKwh} (${currency})`} value={draft.perKwh} set={field('perKwh')} type="number" step="0.01" min={0} />
      <Text label={t.setup.freeMinutes} value={draft.freeMinutes} set={field('freeMinutes')} type="number" min={0} />
      <Text label={t.setup.billingStep} value={draft.billingStep} set={field('billingStep')} type="number" min={1} />
      <Text label={`${t.setup.minimumCharge} (${currency})`} value={draft.minimum} set={field('minimum')} type="number" step="0.01" min={0} />
      <Text label={t.setup.dailyCap(currency)} value={draft.dailyCap} set={field('dailyCap')} type="number" step="0.01" min={0} required={false} />
      <label className="inline">
        <input type="checkbox" checked={draft.pausable} onChange={(e) => set({ ...draft, pausable: e.target.checked })} />
        {t.setup.pausable}
      </label>
    </>
  );
}

/** The venue's prices: where each tariff applies, each edited in place, and a new tariff with a live price preview
 * applied to the venue, a kind of station or one station. */
export function Prices({ venue, version }: { venue: Venue; version: number }) {
  const [data, setData] = useState<VenuePricesResult['venue'] | null>(null);
  const order = useRef(newest()).current;
  const load = async () => {
    const n = order.ask();
    const result = await request(VenuePrices, { venueId: venue.id });
    if (order.fresher(n)) setData(result.venue);
  };
  useEffect(() => {
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [venue.id, version]);
  const stations = data?.stations ?? [];
  const scope = (p: Price) => {
    if (p.stationId) return t.setup.forStation(stations.find((s) => s.id === p.stationId)?.name ?? '');
    if (p.stationKind) return t.setup.forKind(p.stationKind.replace(/_/g, ' ').toLowerCase());
    return t.setup.forVenue;
  };
  return (
    <>
      <Panel title={t.setup.prices}>
        {data && data.prices.length === 0 && <p>{t.setup.noPrices}</p>}
        <ul className="tasks">
          {data?.prices.map((p) => (
            <PriceRow key={`${p.stationKind}-${p.stationId}-${p.tariff.id}`} price={p} scope={scope(p)} reload={load} />
          ))}
        </ul>
      </Panel>
      <TariffForm venue={venue} stations={stations} onCreated={load} />
    </>
  );
}

function PriceRow({ price, scope, reload }: { price: Price; scope: string; reload: () => Promise<void> }) {
  const [editing, setEditing] = useState(false);
  const tariff = price.tariff;
  const label = `${scope}: ${tariff.name}`;
  return (
    <li aria-label={label}>
      <p>
        <strong>{scope}</strong>: {tariff.name} ({t.setup.version(tariff.version)}) — <span data-testid="price-summary">{summary(tariff.terms)}</span>
      </p>
      <button type="button" aria-expanded={editing} aria-label={`${t.setup.edit} ${label}`} onClick={() => setEditing(!editing)}>
        {t.setup.edit}
      </button>
      {editing && <TariffEdit price={price} label={label} refresh={reload} done={async () => { setEditing(false); await reload(); }} />}
    </li>
  );
}

function TariffEdit({ price, label, refresh, done }: { price: Price; label: string; refresh: () => Promise<void>; done: () => Promise<void> }) {
  const tariff = price.tariff;
  const [name, setName] = useState(tariff.name);
  const [draft, setDraft] = useState(() => draftOf(tariff.terms));
  // What the form was opened from (name and terms): when someone else saves the tariff meanwhile, the fields not
  // touched here take their values, so a second save undoes nothing of theirs that was not changed here.
  const [base, setBase] = useState(() => ({ version: tariff.version, name: tariff.name, draft: draftOf(tariff.terms) }));
  useEffect(() => {
    if (tariff.version === base.version && tariff.name === base.name) return;
    const now = draftOf(tariff.terms);
    setDraft((d) => rebase(d, base.draft, now));
    setName((n) => (n === base.name ? tariff.name : n));
    setBase({ version: tariff.version, name: tariff.name, draft: now });
  }, [tariff, base]);
  const [error, saved, submit] = useSubmit();
  return (
    <form
      aria-label={`${t.setup.edit} ${label}`}
      onSubmit={submit(t.setup.tariff, async () => {
        try {
          await request(UpdateTariff, {
            id: tariff.id,
            // Sent only when changed here, so a rename made elsewhere meanwhile stands.
            name: name === base.name ? undefined : name,
            terms: termsOf(draft, tariff.terms.currency, tariff.terms),
            expectedVersion: tariff.version,
          });
        } catch (err) {
          // Someone else saved it since this form opened: the row shows their version, the form keeps this draft.
          if (err instanceof ApiError && err.code === 'conflict') {
            await refresh();
            throw new ApiError(t.setup.changedMeanwhile, err.code);
          }
          throw err;
        }
        await done();
      })}
    >
      <p className="note">{t.setup.newVersion}</p>
      <Text label={t.setup.tariffName} value={name} set={setName} />
      <TermsFields draft={draft} set={setDraft} currency={tariff.terms.currency} />
      <button type="submit">{t.setup.saveTariff}</button>
      <Outcome error={error} saved={saved} />
    </form>
  );
}

function TariffForm({ venue, stations, onCreated }: { venue: Venue; stations: { id: string; name: string }[]; onCreated: () => Promise<void> }) {
  const [name, setName] = useState('Standard');
  const [draft, setDraft] = useState<Draft>(NEW);
  const [appliesTo, setAppliesTo] = useState('venue');
  const [minutes, setMinutes] = useState('90');
  const [kwh, setKwh] = useState('0');
  const [startAt, setStartAt] = useState(() => new Date().toISOString().slice(0, 16));
  const [preview, setPreview] = useState<PricePreviewResult['pricePreview'] | null>(null);
  const [previewError, setPreviewError] = useState<string | null>(null);
  const [error, saved, submit] = useSubmit();
  const terms = () => termsOf(draft, venue.currency);
  useEffect(() => {
    const timer = setTimeout(async () => {
      try {
        const r = await request(PricePreview, {
          terms: terms(),
          timezone: venue.timezone,
          startAt: new Date(startAt).toISOString(),
          minutes: Number.parseInt(minutes, 10) || 0,
          energyWh: Math.round((Number.parseFloat(kwh.replace(',', '.')) || 0) * 1000),
        });
        setPreview(r.pricePreview);
        setPreviewError(null);
      } catch (e) {
        setPreview(null);
        setPreviewError(e instanceof ApiError ? e.message : t.errors.generic);
      }
    }, 200);
    return () => clearTimeout(timer);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [draft, minutes, kwh, startAt, venue.id]);
  return (
    <Panel title={t.setup.tariff}>
      <form
        onSubmit={submit(t.setup.tariff, async () => {
          // Created and applied in one request: a refused assignment leaves no tariff behind.
          const [what, id] = appliesTo.split(':');
          await request(CreateTariff, {
            name,
            terms: terms(),
            applyTo: {
              venueId: venue.id,
              stationKind: what === 'kind' ? (id as StationKind) : null,
              stationId: what === 'station' ? id : null,
            },
          });
          await onCreated();
        })}
      >
        <Text label={t.setup.tariffName} value={name} set={setName} />
        <TermsFields draft={draft} set={setDraft} currency={venue.currency} />
        <label>
          {t.setup.appliesTo}
          <select value={appliesTo} onChange={(e) => setAppliesTo(e.target.value)}>
            <option value="venue">{t.setup.forVenue}</option>
            {StationKindValues.map((k) => (
              <option key={k} value={`kind:${k}`}>{t.setup.forKind(k.replace(/_/g, ' ').toLowerCase())}</option>
            ))}
            {stations.map((s) => (
              <option key={s.id} value={`station:${s.id}`}>{t.setup.forStation(s.name)}</option>
            ))}
          </select>
        </label>
        <fieldset className="preview">
          <legend>{t.setup.preview}</legend>
          <Text label={`${t.setup.previewFor} (${t.floor.minutes})`} value={minutes} set={setMinutes} type="number" min={1} />
          <Text label={t.setup.previewEnergy} value={kwh} set={setKwh} type="number" step="0.1" min={0} />
          <Text label={t.setup.previewAt} value={startAt} set={setStartAt} type="datetime-local" />
          <div aria-live="polite" className="preview-result">
            {preview && (
              <table>
                <tbody>
                  {preview.lines.map((l, i) => (
                    <tr key={i}>
                      <td>{l.description}</td>
                      <td className="num">{money(l.amount, preview.currency)}</td>
                    </tr>
                  ))}
                  <tr className="total">
                    <th scope="row">{t.setup.total}</th>
                    <td className="num" data-testid="preview-total">{money(preview.amount, preview.currency)}</td>
                  </tr>
                </tbody>
              </table>
            )}
            {previewError && <p className="error">{previewError}</p>}
          </div>
        </fieldset>
        <button type="submit">{t.setup.createTariff}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}
