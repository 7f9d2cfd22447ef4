import { useEffect, useState } from 'react';
import { request } from '../api/client';
import {
  AddRfidTag,
  CreatePatron,
  FlagPatron,
  UnflagPatron,
  FindPatrons,
  PatronDetail,
  TopUpCash,
  Venues,
  type FindPatronsResult,
  type PatronDetailResult,
  type VenuesResult,
} from '../api/generated';
import { money } from '../floor/model';
import { t } from '../i18n';
import { toMinor } from '../setup/money';
import { Outcome, Panel, Text, useSubmit } from '../ui';

type Venue = VenuesResult['venues'][number];

/** Patrons: search, add, and one patron's wallet and statement, tags and flag, with a cash top-up. */
export function PatronsPage() {
  const [search, setSearch] = useState('');
  const [found, setFound] = useState<FindPatronsResult['patrons'] | null>(null);
  const [venues, setVenues] = useState<Venue[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    void request(Venues, {}).then((r) => setVenues(r.venues));
  }, []);
  useEffect(() => {
    const timer = setTimeout(() => {
      void request(FindPatrons, { search: search || null }).then((r) => setFound(r.patrons));
    }, 200);
    return () => clearTimeout(timer);
  }, [search, generation]);
  return (
    <section aria-labelledby="patrons-title">
      <h1 id="patrons-title">{t.patrons.title}</h1>
      <label>
        {t.patrons.search}
        <input type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
      </label>
      {found && found.length === 0 && <p>{t.patrons.none}</p>}
      <ul className="people">
        {(found ?? []).map((p) => (
          <li key={p.id}>
            <button type="button" aria-pressed={open === p.id} onClick={() => setOpen(p.id)}>
              {p.displayName}
              {p.email ? ` · ${p.email}` : ''}
              {p.flagged ? ` · ${t.patrons.flagged}` : ''}
            </button>
          </li>
        ))}
      </ul>
      <NewPatron onCreated={(id) => { setGeneration((g) => g + 1); setOpen(id); }} />
      {open && venues[0] && <Patron id={open} venues={venues} />}
    </section>
  );
}

function NewPatron({ onCreated }: { onCreated: (id: string) => void }) {
  const [name, setName] = useState('');
  const [email, setEmail] = useState('');
  const [error, saved, submit] = useSubmit();
  return (
    <Panel title={t.patrons.newPatron}>
      <form
        onSubmit={submit(t.patrons.newPatron, async () => {
          const r = await request(CreatePatron, { input: { displayName: name, email: email || null } });
          setName('');
          setEmail('');
          onCreated(r.createPatron.id);
        })}
      >
        <Text label={t.patrons.name} value={name} set={setName} />
        <Text label={t.patrons.email} value={email} set={setEmail} type="email" required={false} />
        <button type="submit">{t.patrons.create}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

/** Linking a tag, and flagging or unflagging the patron (managers and owners take a flag away). */
function TagsAndFlag({ p, reload }: { p: PatronDetailResult['patron']; reload: () => Promise<void> }) {
  const [uid, setUid] = useState('');
  const [reason, setReason] = useState('');
  const [tagError, tagSaved, submitTag] = useSubmit();
  const [flagError, flagSaved, submitFlag] = useSubmit();
  return (
    <div className="columns">
      <form
        onSubmit={submitTag(t.patrons.addTag, async () => {
          await request(AddRfidTag, { patronId: p.id, uid: uid.trim() });
          setUid('');
          await reload();
        })}
      >
        <h3>{t.patrons.addTag}</h3>
        <Text label={t.patrons.tagUid} value={uid} set={setUid} />
        <button type="submit">{t.patrons.addTagSubmit}</button>
        <Outcome error={tagError} saved={tagSaved} />
      </form>
      <form
        onSubmit={submitFlag(t.patrons.flag, async () => {
          if (p.flagged) await request(UnflagPatron, { patronId: p.id });
          else await request(FlagPatron, { patronId: p.id, reason: reason.trim() });
          setReason('');
          await reload();
        })}
      >
        <h3>{t.patrons.flag}</h3>
        {!p.flagged && <Text label={t.patrons.flagReason} value={reason} set={setReason} />}
        <button type="submit">
          {p.flagged ? t.patrons.unflag : t.patrons.flagSubmit}
        </button>
        <Outcome error={flagError} saved={flagSaved} />
      </form>
    </div>
  );
}

function Patron({ id, venues }: { id: string; venues: Venue[] }) {
  const [venueId, setVenueId] = useState(venues[0].id);
  const venue = venues.find((v) => v.id === venueId) ?? venues[0];
  const [p, setP] = useState<PatronDetailResult['patron'] | null>(null);
  const [amount, setAmount] = useState('');
  // One key per top-up: a double click or a retry after a lost answer counts once.
  const [key, setKey] = useState(() => crypto.randomUUID());
  const [error, saved, submit] = useSubmit();
  const load = async () => setP((await request(PatronDetail, { id, currency: venue.currency })).patron);
  useEffect(() => {
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [id, venue.currency]);
  if (!p) return null;
  const w = p.wallet;
  return (
    <Panel title={p.displayName}>
      <p>
        {p.email ?? '—'} · {t.patrons.tier} {p.tier}
        {p.flagged && ` · ${t.patrons.flagged}: ${p.flagReason ?? ''}`}
      </p>
      <p>
        {t.patrons.tags}: {p.rfidTags.length ? p.rfidTags.join(', ') : t.patrons.noTags}
      </p>
      <dl className="wallet">
        <dt>{t.patrons.balance}</dt>
        <dd data-testid="wallet-balance">{money(w.balance, w.currency)}</dd>
        <dt>{t.patrons.deposit}</dt>
        <dd>{money(w.depositHeld, w.currency)}</dd>
        <dt>{t.patrons.debt}</dt>
        <dd>{money(w.debt, w.currency)}</dd>
        {p.debtCollection.map((d) => (
          <div key={d.currency}>
            <dt>{`${t.patrons.collection} (${d.currency})`}</dt>
            <dd>
              {t.patrons.collectionLine(d.status, d.attempts, d.nextAttemptAt ? new Date(d.nextAttemptAt).toLocaleString('en-GB') : null)}
              {d.lastError ? ` · ${d.lastError}` : ''}
            </dd>
          </div>
        ))}
      </dl>
      <TagsAndFlag p={p} reload={load} />
      <form
        onSubmit={submit(t.patrons.topUp, async () => {
          await request(TopUpCash, { patronId: p.id, venueId, amount: toMinor(amount, venue.currency), idempotencyKey: key });
          setKey(crypto.randomUUID());
          setAmount('');
          await load();
        })}
      >
        <h3>{t.patrons.topUp}</h3>
        <Text label={`${t.patrons.amount} (${venue.currency})`} value={amount} set={setAmount} type="number" step="0.01" min={0} />
        <label>
          {t.patrons.venue}
          <select value={venueId} onChange={(e) => setVenueId(e.target.value)}>
            {venues.map((v) => (
              <option key={v.id} value={v.id}>{v.name}</option>
            ))}
          </select>
        </label>
        <button type="submit">{t.patrons.topUpSubmit}</button>
        <Outcome error={error} saved={saved} />
      </form>
      <h3>{t.patrons.statement}</h3>
      <table className="list">
        <thead>
          <tr>
            <th scope="col">{t.patrons.when}</th>
            <th scope="col">{t.patrons.what}</th>
            <th scope="col" className="num">{t.patrons.amount}</th>
            <th scope="col" className="num">{t.patrons.balance}</th>
          </tr>
        </thead>
        <tbody>
          {w.statement.map((l) => (
            <tr key={l.journalId}>
              <td>{new Date(l.createdAt).toLocaleString('en-GB')}</td>
              <td>{l.memo || l.kind}</td>
              <td className="num">{money(l.amount, w.currency)}</td>
              <td className="num">{money(l.balance, w.currency)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Panel>
  );
}
