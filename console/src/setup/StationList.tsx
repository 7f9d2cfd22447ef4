import { useEffect, useRef, useState } from 'react';
import { request } from '../api/client';
import { newest } from '../api/newest';
import {
  ArchiveStation,
  StationChanges,
  UpdateStation,
  VenueStations,
  type StationControl,
  type VenueStationsResult,
} from '../api/generated';
import { subscribe } from '../api/live';
import { t } from '../i18n';
import { Outcome, Panel, Text, useSubmit } from '../ui';
import { changedSettings, controlSettings } from './control';
import { ControlFields } from './ControlFields';

type Station = VenueStationsResult['stations'][number];

/** The venue's stations as they are now (reloaded on every live event and after `version` moves): each edited in
 * place, taken out of use and back, or archived. */
export function StationList({ venueId, version }: { venueId: string; version: number }) {
  const [stations, setStations] = useState<Station[] | null>(null);
  const order = useRef(newest()).current;
  const load = async () => {
    const n = order.ask();
    const result = await request(VenueStations, { venueId });
    if (order.fresher(n)) setStations(result.stations);
  };
  useEffect(() => {
    // A station's status follows its device, its sessions and other consoles: each change of the venue's stations
    // reloads the list, and so does a reconnection (what happened meanwhile).
    return subscribe(StationChanges, { venueId }, { next: () => void load(), status: (up) => up && void load() });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [venueId]);
  useEffect(() => {
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [venueId, version]);
  if (!stations) return null;
  return (
    <Panel title={t.setup.stationsHere}>
      {stations.length === 0 && <p>{t.setup.noStations}</p>}
      <ul className="tasks">
        {stations.map((s) => (
          <StationRow key={s.id} station={s} reload={load} />
        ))}
      </ul>
    </Panel>
  );
}

function StationRow({ station, reload }: { station: Station; reload: () => Promise<void> }) {
  const [editing, setEditing] = useState(false);
  const [asking, setAsking] = useState(false);
  const [edited, setEdited] = useState<string | null>(null);
  const [error, saved, submit] = useSubmit();
  const act = (what: string, f: () => Promise<unknown>) =>
    submit(what, async () => {
      setEdited(null);
      await f();
      await reload();
    });
  const inMaintenance = station.status === 'MAINTENANCE';
  return (
    <li aria-label={station.name}>
      <p>
        <strong>{station.name}</strong> · {station.kind.replace(/_/g, ' ').toLowerCase()} ·{' '}
        {station.control.toLowerCase()} · <span data-testid="station-status">{t.setup.statuses[station.status]}</span>
        {station.location && ` · ${station.location}`}
      </p>
      <form
        className="actions"
        onSubmit={act(station.name, () =>
          request(UpdateStation, { id: station.id, input: { status: inMaintenance ? 'OFFLINE' : 'MAINTENANCE' } }),
        )}
      >
        <button type="button" aria-expanded={editing} aria-label={`${t.setup.edit} ${station.name}`} onClick={() => setEditing(!editing)}>
          {t.setup.edit}
        </button>
        <button type="submit" className="secondary" aria-label={`${inMaintenance ? t.setup.backInUse : t.setup.outOfUse} ${station.name}`}>
          {inMaintenance ? t.setup.backInUse : t.setup.outOfUse}
        </button>
        <button
          type="button"
          className="danger"
          aria-expanded={asking}
          aria-label={`${t.setup.archive} ${station.name}`}
          onClick={() => setAsking(true)}
        >
          {t.setup.archive}
        </button>
      </form>
      {station.status === 'IN_SESSION' && <p className="note">{t.setup.inSessionNote}</p>}
      {asking && (
        <form className="actions" onSubmit={act(station.name, () => request(ArchiveStation, { id: station.id }))}>
          <p>{t.setup.archiveAsk(station.name)}</p>
          {/* The question takes the focus: its answer is the next thing to do. */}
          <button type="submit" className="danger" autoFocus>{t.setup.archiveNow(station.name)}</button>
          <button type="button" onClick={() => setAsking(false)}>{t.setup.keep}</button>
        </form>
      )}
      {editing && (
        <StationEdit
          station={station}
          done={async (name) => {
            setEditing(false);
            setEdited(t.setup.saved(name));
            await reload();
          }}
        />
      )}
      <Outcome error={error} saved={saved ?? edited} />
    </li>
  );
}

/** Edits a station as it was when the form opened: only the fields changed here are sent, so a change made
 * meanwhile elsewhere to another field stands, and settings the form does not show are kept. */
function StationEdit({ station: live, done }: { station: Station; done: (name: string) => Promise<void> }) {
  // The station as the form opened on it: what is compared and kept, whatever the live list shows meanwhile.
  const [station] = useState(live);
  const existing = (station.controlSettings ?? {}) as Record<string, unknown>;
  const initial = () => Object.fromEntries(Object.entries(existing).map(([k, v]) => [k, String(v)]));
  const [name, setName] = useState(station.name);
  const [location, setLocation] = useState(station.location);
  const [control, setControl] = useState<StationControl>(station.control);
  const [values, setValues] = useState<Record<string, string>>(initial);
  const [selfService, setSelfService] = useState(station.selfService);
  const [error, saved, submit] = useSubmit();
  return (
    <form
      aria-label={`${t.setup.edit} ${station.name}`}
      onSubmit={submit(name, async () => {
        const settings = control === station.control ? changedSettings(control, existing, values) : controlSettings(control, values);
        await request(UpdateStation, {
          id: station.id,
          input: {
            name: name === station.name ? null : name,
            location: location === station.location ? null : location,
            control: control === station.control ? null : control,
            controlSettings: settings,
            selfService: selfService === station.selfService ? null : selfService,
          },
        });
        await done(name);
      })}
    >
      <Text label={t.setup.stationName} value={name} set={setName} />
      <Text label={t.setup.whereInVenue} value={location} set={setLocation} required={false} />
      <ControlFields control={control} setControl={setControl} values={values} setValues={setValues} />
      <label className="inline">
        <input type="checkbox" checked={selfService} onChange={(e) => setSelfService(e.target.checked)} />
        {t.setup.selfService}
      </label>
      <button type="submit">{t.setup.saveStation}</button>
      <Outcome error={error} saved={saved} />
    </form>
  );
}
