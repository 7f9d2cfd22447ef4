import { useEffect, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import { ChargerCommand, Chargers, StartSession, LiveEvents, StopSession, type ChargerCommandKind, type ChargersResult } from '../api/generated';
import { subscribe } from '../api/live';
import { StartForm } from '../floor/FloorPage';
import { t } from '../i18n';

type Charger = ChargersResult['chargers'][number];
type Station = ChargersResult['stations'][number];

/** The tenant's chargers: online state, connectors as the charger reports them (pushed), the latest transactions,
 * remote start and stop, and a few commands. */
export function ChargersPage() {
  const [data, setData] = useState<ChargersResult | null>(null);
  const load = async () => setData(await request(Chargers, {}));
  useEffect(() => {
    void load();
    // Any change the member may hear (a connector's status, a charger online, a transaction) reloads the list.
    const stop1 = subscribe(LiveEvents, {}, { next: () => void load() });
    return stop1;
  }, []);
  if (!data) return null;
  return (
    <section aria-labelledby="chargers-title">
      <h1 id="chargers-title">{t.chargers.title}</h1>
      {data.chargers.length === 0 && <p>{t.chargers.none}</p>}
      <ul className="tiles">
        {data.chargers.map((c) => (
          <ChargerCard key={c.id} charger={c} station={data.stations.find((s) => s.id === c.stationId)} reload={load} />
        ))}
      </ul>
    </section>
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
      return t.chargers.answered(r.chargerCommand.action, r.chargerCommand.status);
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
                {x.ocppId} · {x.idTag} · {(x.energyWh / 1000).toFixed(2)} kWh · {x.stoppedAt ? x.stopReason ?? '' : t.chargers.running}
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
