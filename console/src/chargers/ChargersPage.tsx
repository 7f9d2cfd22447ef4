import { useEffect, useRef, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import { newest } from '../api/newest';
import {
  AdoptCharger,
  CancelChargerReservation,
  ChargerCommand,
  Chargers,
  ForgetCharger,
  LiveEvents,
  RejectCharger,
  ReserveCharger,
  SetChargerPassword,
  StartSession,
  StopSession,
  type ChargerCommandKind,
  type ChargersResult,
} from '../api/generated';
import { subscribe } from '../api/live';
import { StartForm } from '../floor/FloorPage';
import { t } from '../i18n';
import { usePatronSearch } from '../patrons/search';

type Charger = ChargersResult['chargers'][number];
type Station = ChargersResult['stations'][number];

/** The tenant's chargers: online state, connectors as the charger reports them (pushed), the latest transactions,
 * remote start and stop, and a few commands; above them, new chargers waiting to be adopted onto a station. */
export function ChargersPage() {
  const [data, setData] = useState<ChargersResult | null>(null);
  // The password of a charger just adopted, shown once (its card moves from the new chargers to the others).
  const [adopted, setAdopted] = useState<string | null>(null);
  const order = useRef(newest()).current;
  const load = async () => {
    const n = order.ask();
    const result = await request(Chargers, {});
    if (order.fresher(n)) setData(result);
  };
  useEffect(() => {
    void load();
    // Any change the member may hear (a connector's status, a charger online, a transaction) reloads the list.
    const stop1 = subscribe(LiveEvents, {}, { next: () => void load() });
    return stop1;
  }, []);
  if (!data) return null;
  const waiting = data.chargers.filter((c) => c.registration !== 'accepted');
  const accepted = data.chargers.filter((c) => c.registration === 'accepted');
  // Stations a charger may be adopted onto: EV charger stations that have none and no session, running or paused.
  const free = data.stations.filter(
    (s) =>
      s.status !== 'IN_SESSION' &&
      !data.paused.some((p) => p.stationId === s.id) &&
      !data.chargers.some((c) => c.stationId === s.id),
  );
  return (
    <section aria-labelledby="chargers-title">
      <h1 id="chargers-title">{t.chargers.title}</h1>
      {adopted && (
        <p role="status">
          <span data-testid="adopted-password">{adopted}</span>{' '}
          <button type="button" onClick={() => setAdopted(null)}>{t.chargers.passwordNoted}</button>
        </p>
      )}
      {waiting.length > 0 && (
        <section aria-labelledby="new-chargers-title">
          <h2 id="new-chargers-title">{t.chargers.waiting}</h2>
          <p>{t.chargers.waitingHelp}</p>
          <ul className="tiles">
            {waiting.map((c) => (
              <NewCharger key={c.id} charger={c} stations={free} reload={load} adopted={setAdopted} />
            ))}
          </ul>
        </section>
      )}
      {accepted.length === 0 && <p>{t.chargers.none}</p>}
      <ul className="tiles">
        {accepted.map((c) => (
          <ChargerCard key={c.id} charger={c} station={data.stations.find((s) => s.id === c.stationId)} reload={load} />
        ))}
      </ul>
    </section>
  );
}

/** A charger that joined with the tenant's onboarding key (or was refused before): adopted onto a free EV charger
 * station, or refused (the key no longer opens it); a refused one may be forgotten (its identity is free again). */
function NewCharger({ charger: c, stations, reload, adopted }: { charger: Charger; stations: Station[]; reload: () => Promise<void>; adopted: (said: string) => void }) {
  const [station, setStation] = useState('');
  const [error, setError] = useState<string | null>(null);
  // Only a station the operator picked, and only while it is still free (a reload may take it away).
  const chosen = stations.some((s) => s.id === station) ? station : '';
  const refused = c.registration === 'rejected';
  const act = async (f: () => Promise<void>) => {
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : t.errors.generic);
    }
    await reload();
  };
  const name = `${c.chargePointId}: ${refused ? t.chargers.refused : c.online ? t.chargers.online : t.chargers.offline}`;
  return (
    <li className={`tile ${c.online ? 'online' : 'offline'}`} aria-label={name}>
      <h3>{c.chargePointId}</h3>
      <p className="kind">
        {[c.vendor, c.model, c.firmwareVersion].filter(Boolean).join(' ') || t.chargers.noBoot}
        {c.serialNumber && <> · {t.chargers.serial} {c.serialNumber}</>} · OCPP {c.protocol?.replace(/^ocpp/i, '') ?? '—'}
      </p>
      <p className="state">
        <span className={`dot ${c.online ? 'online' : 'offline'}`} aria-hidden="true" />{' '}
        <span>{refused ? t.chargers.refused : c.online ? t.chargers.online : t.chargers.offline}</span>
        {' · '}
        {t.chargers.joined(new Date(c.createdAt).toLocaleString('en-GB'))}
      </p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void act(async () => {
            const r = await request(AdoptCharger, { id: c.id, stationId: chosen });
            const onto = stations.find((s) => s.id === chosen)?.name ?? '';
            const { password, charger } = r.adoptCharger;
            adopted(charger.online ? t.chargers.adoptedSent(c.chargePointId, onto, password) : t.chargers.adoptedByHand(c.chargePointId, onto, password));
          });
        }}
      >
        {stations.length === 0 ? (
          <p>{t.chargers.noFreeStation}</p>
        ) : (
          <label>
            {t.chargers.adoptOnto}
            <select value={chosen} onChange={(e) => setStation(e.target.value)} required>
              <option value="">{t.chargers.pickStation}</option>
              {stations.map((s) => (
                <option key={s.id} value={s.id}>{s.name}</option>
              ))}
            </select>
          </label>
        )}
        <div className="actions">
          <button type="submit" disabled={!chosen} aria-label={t.chargers.adoptNamed(c.chargePointId)}>{t.chargers.adopt}</button>
          {refused ? (
            <button type="button" className="danger" aria-label={t.chargers.forgetNamed(c.chargePointId)} onClick={() => void act(() => request(ForgetCharger, { id: c.id }).then(() => undefined))}>
              {t.chargers.forget}
            </button>
          ) : (
            <button type="button" className="danger" aria-label={t.chargers.refuseNamed(c.chargePointId)} onClick={() => void act(() => request(RejectCharger, { id: c.id }).then(() => undefined))}>
              {t.chargers.refuse}
            </button>
          )}
        </div>
        {error && <p role="alert" className="error">{error}</p>}
      </form>
    </li>
  );
}

function ChargerCard({ charger: c, station, reload }: { charger: Charger; station?: Station; reload: () => Promise<void> }) {
  const [starting, setStarting] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const running = c.transactions.find((x) => !x.stoppedAt && x.sessionId);
  const act = async (f: () => Promise<string | void>) => {
    setNote(null);
    try {
      const said = await f();
      if (said) setNote(said);
    } catch (e) {
      setNote(e instanceof ApiError ? e.message : t.errors.generic);
    }
    await reload();
  };
  const command = (kind: ChargerCommandKind, connector?: number) =>
    act(async () => {
      const r = await request(ChargerCommand, { id: c.id, command: { kind, connector: connector ?? null, keys: [] } });
      return t.chargers.answered(r.chargerCommand.action, said(r.chargerCommand));
    });
  return (
    <li className={`tile ${c.online ? 'online' : 'offline'}`} aria-label={`${station?.name ?? c.chargePointId}: ${c.online ? t.chargers.online : t.chargers.offline}`}>
      <h2>{station?.name ?? c.chargePointId}</h2>
      <p className="kind">
        {c.chargePointId} · {c.vendor} {c.model} {c.firmwareVersion} · OCPP {c.protocol?.replace(/^ocpp/i, '') ?? '—'}
      </p>
      <p className="state">
        <span className={`dot ${c.online ? 'online' : 'offline'}`} aria-hidden="true" />{' '}
        <span>{c.online ? t.chargers.online : t.chargers.offline}</span>
        {' · '}
        {t.chargers.limit}: {c.powerLimitW ? `${(c.powerLimitW / 1000).toFixed(1)} kW` : t.chargers.noLimit}
        {c.passwordPending && <> · {t.chargers.passwordPending}</>}
        {c.rebootRequired && <> · {t.chargers.rebootRequired}</>}
      </p>
      <ul className="connectors">
        {(station?.connectors ?? []).map((k) => (
          <li key={k.number}>
            {t.chargers.connector(k.number)}: <strong>{k.status.replace('_', ' ').toLowerCase()}</strong>
          </li>
        ))}
      </ul>
      {c.transactions.length > 0 && (
        <>
          <h3>{t.chargers.transactions}</h3>
          <ul className="transactions">
            {c.transactions.map((x) => (
              <li key={x.ocppId}>
                {x.ocppId} · {x.idTag ?? (x.authStatus === 'Pending' ? t.chargers.pendingToken : t.chargers.freeVend)} · {(x.energyWh / 1000).toFixed(2)} kWh · {x.stoppedAt ? x.stopReason ?? '' : t.chargers.running}
              </li>
            ))}
          </ul>
        </>
      )}
      {note && <p role="status">{note}</p>}
      <div className="actions">
        {running?.sessionId ? (
          <button type="button" className="danger" onClick={() => act(() => request(StopSession, { id: running.sessionId! }).then(() => undefined))}>
            {t.chargers.stop}
          </button>
        ) : (
          c.stationId && (
            <button type="button" disabled={!c.online} onClick={() => setStarting(true)}>
              {t.chargers.start}
            </button>
          )
        )}
        <button type="button" disabled={!c.online} onClick={() => command('UNLOCK_CONNECTOR', 1)}>{t.chargers.unlock}</button>
        <button type="button" disabled={!c.online} onClick={() => command('SOFT_RESET')}>{t.chargers.reset}</button>
      </div>
      <details className="more">
        <summary>{t.chargers.more}</summary>
        <Commands charger={c} act={act} />
        {c.calls.length > 0 && (
          <>
            <h3>{t.chargers.calls}</h3>
            <ul className="transactions" data-testid="calls">
              {c.calls.map((x) => (
                <li key={x.id}>
                  {new Date(x.createdAt).toLocaleTimeString('en-GB')} · {x.action}: {said(x)}
                </li>
              ))}
            </ul>
          </>
        )}
      </details>
      {starting && c.stationId && (
        <StartForm
          station={{ station_id: c.stationId, name: station?.name ?? c.chargePointId }}
          onDone={() => setStarting(false)}
          start={(input) => act(() => request(StartSession, { input, idempotencyKey: crypto.randomUUID() }).then(() => undefined))}
        />
      )}
    </li>
  );
}

/** What a charger said to a call: the `status` of its answer (`Accepted`, `Rejected`, ...), else the call's state. */
export function said(call: { status: string; response?: unknown }): string {
  const r = call.response as { status?: unknown } | null | undefined;
  return typeof r?.status === 'string' ? r.status : call.status;
}

/** The less frequent commands: a power limit, a connector's availability, a local list sync, a hard reset, a
 * reservation for a patron (cancelled from here too), and a new password for the charger. */
function Commands({ charger: c, act }: { charger: Charger; act: (f: () => Promise<string | void>) => Promise<void> }) {
  const [kw, setKw] = useState(c.powerLimitW ? String(c.powerLimitW / 1000) : '');
  const [search, setSearch] = useState('');
  const [patron, setPatron] = useState('');
  const { found, chosen } = usePatronSearch(search, patron);
  const [minutes, setMinutes] = useState('30');
  const [reservation, setReservation] = useState<number | null>(null);
  const run = (kind: ChargerCommandKind, extra: { connector?: number; operative?: boolean; watts?: number } = {}) =>
    act(async () => {
      const r = await request(ChargerCommand, { id: c.id, command: { kind, keys: [], ...extra } });
      return t.chargers.answered(r.chargerCommand.action, said(r.chargerCommand));
    });
  return (
    <div className="columns">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void run('SET_POWER_LIMIT', { watts: Math.round(Number.parseFloat(kw) * 1000) });
        }}
      >
        <label>
          {t.chargers.limitKw}
          <input type="number" min={0.1} step={0.1} value={kw} onChange={(e) => setKw(e.target.value)} required />
        </label>
        <button type="submit" disabled={!c.online}>{t.chargers.setLimit}</button>
      </form>
      <div>
        <button type="button" disabled={!c.online} onClick={() => void run('CHANGE_AVAILABILITY', { connector: 1, operative: false })}>{t.chargers.inoperative}</button>{' '}
        <button type="button" disabled={!c.online} onClick={() => void run('CHANGE_AVAILABILITY', { connector: 1, operative: true })}>{t.chargers.operative}</button>{' '}
        <button type="button" disabled={!c.online} onClick={() => void run('SYNC_LOCAL_LIST')}>{t.chargers.sync}</button>{' '}
        <button type="button" disabled={!c.online} onClick={() => void run('HARD_RESET')}>{t.chargers.hardReset}</button>
      </div>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void act(async () => {
            const expiresAt = new Date(Date.now() + Number.parseInt(minutes, 10) * 60_000).toISOString();
            const r = await request(ReserveCharger, { id: c.id, patronId: chosen, expiresAt });
            const answer = said(r.reserveCharger.call);
            setReservation(answer === 'Accepted' ? r.reserveCharger.id : null);
            return t.chargers.reserved(r.reserveCharger.id, answer);
          });
        }}
      >
        <h3>{t.chargers.reserve}</h3>
        <label>
          {t.chargers.findPatron}
          <input type="search" value={search} onChange={(e) => setSearch(e.target.value)} />
        </label>
        <label>
          {t.chargers.reserveFor}
          <select value={chosen} onChange={(e) => setPatron(e.target.value)} required>
            {found.map((p) => (
              <option key={p.id} value={p.id}>{p.displayName}</option>
            ))}
          </select>
        </label>
        <label>
          {t.chargers.minutes}
          <input type="number" min={1} max={1440} value={minutes} onChange={(e) => setMinutes(e.target.value)} required />
        </label>
        <button type="submit" disabled={!c.online || !chosen}>{t.chargers.reserveSubmit}</button>
        {reservation !== null && (
          <button
            type="button"
            onClick={() =>
              void act(async () => {
                const r = await request(CancelChargerReservation, { reservationId: reservation });
                setReservation(null);
                return t.chargers.answered(r.cancelChargerReservation.action, said(r.cancelChargerReservation));
              })
            }
          >
            {t.chargers.cancelReservation(reservation)}
          </button>
        )}
      </form>
      <NewPassword charger={c} act={act} />
    </div>
  );
}

/** A new password for the charger, shown once (kept here until dismissed, whatever else the card does). The server
 * sends it to a connected charger and keeps the old one until the charger takes it; offline, or with the old one
 * ended because it leaked, the old one stops at once and the new one is set on the charger by hand. */
function NewPassword({ charger: c, act }: { charger: Charger; act: (f: () => Promise<string | void>) => Promise<void> }) {
  const [revokeOld, setRevokeOld] = useState(false);
  const [shown, setShown] = useState<string | null>(null);
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        void act(async () => {
          const r = await request(SetChargerPassword, { id: c.id, revokeOld });
          setRevokeOld(false);
          const { password, charger } = r.setChargerPassword;
          // Pending right after the change exactly when the server sent it to the charger.
          setShown(charger.passwordPending ? t.chargers.passwordSent(password) : t.chargers.passwordByHand(password));
        });
      }}
    >
      <h3>{t.chargers.password}</h3>
      <label className="inline">
        <input type="checkbox" checked={revokeOld} onChange={(e) => setRevokeOld(e.target.checked)} />
        {t.chargers.revokeOld}
      </label>
      {(!c.online || revokeOld) && <p>{t.chargers.byHandWarning}</p>}
      <button type="submit">{t.chargers.newPassword}</button>
      {shown && (
        <p role="status">
          <span data-testid="new-password">{shown}</span>{' '}
          <button type="button" onClick={() => setShown(null)}>{t.chargers.passwordNoted}</button>
        </p>
      )}
    </form>
  );
}
