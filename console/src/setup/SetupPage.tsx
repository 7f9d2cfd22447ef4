import { useEffect, useState } from 'react';
import { request } from '../api/client';
import {
  Bridges,
  CreateBridge,
  CreateStation,
  CreateVenue,
  SetVenueGeofence,
  UpdateStation,
  StationKindValues,
  Venues,
  type BridgesResult,
  type StationControl,
  type StationKind,
  type VenuesResult,
} from '../api/generated';
import { t } from '../i18n';
import { Outcome, Panel, Text, useSubmit } from '../ui';
import { controlSettings, hasConnectors } from './control';
import { ControlFields } from './ControlFields';
import { Prices } from './Prices';
import { StationList } from './StationList';

type Venue = VenuesResult['venues'][number];

/** Set-up: a venue, its stations (added, edited, taken out of use, archived), and a tariff with a live price
 * preview. */
export function SetupPage() {
  const [venues, setVenues] = useState<Venue[]>([]);
  const [venueId, setVenueId] = useState('');
  // Moves when a station is added, so the list shows it.
  const [added, setAdded] = useState(0);
  const reload = async () => {
    const v = (await request(Venues, {})).venues;
    setVenues(v);
    setVenueId((current) => current || v[0]?.id || '');
  };
  useEffect(() => {
    void reload();
  }, []);
  const venue = venues.find((v) => v.id === venueId);
  return (
    <div className="setup">
      <h1>{t.setup.title}</h1>
      <VenueForm onCreated={async (id) => { await reload(); setVenueId(id); }} />
      {venues.length > 0 && (
        <label className="venue-pick">
          {t.floor.venue}{' '}
          <select value={venueId} onChange={(e) => setVenueId(e.target.value)}>
            {venues.map((v) => (
              <option key={v.id} value={v.id}>{v.name}</option>
            ))}
          </select>
        </label>
      )}
      {venue && <LocationForm key={venue.id} venue={venue} onSaved={reload} />}
      {venue && <StationForm venue={venue} onCreated={() => setAdded((n) => n + 1)} />}
      {venue && <StationList venueId={venue.id} version={added} />}
      {venue && <Prices venue={venue} version={added} />}
      {venue && <BridgeForm venue={venue} />}
    </div>
  );
}

function VenueForm({ onCreated }: { onCreated: (id: string) => Promise<void> }) {
  const [name, setName] = useState('');
  const [timezone, setTimezone] = useState(() => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC');
  const [currency, setCurrency] = useState('EUR');
  const [address, setAddress] = useState('');
  const [error, saved, submit] = useSubmit();
  return (
    <Panel title={t.setup.venue}>
      <form
        onSubmit={submit(t.setup.venue, async () => {
          const v = await request(CreateVenue, { input: { name, timezone, currency, address: address || null } });
          await onCreated(v.createVenue.id);
        })}
      >
        <Text label={t.setup.venueName} value={name} set={setName} />
        <Text label={t.setup.timezone} value={timezone} set={setTimezone} />
        <Text label={t.setup.currency} value={currency} set={(v) => setCurrency(v.toUpperCase())} />
        <Text label={t.setup.address} value={address} set={setAddress} required={false} />
        <button type="submit">{t.setup.createVenue}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

function LocationForm({ venue, onSaved }: { venue: Venue; onSaved: () => Promise<void> }) {
  const [lat, setLat] = useState(venue.latitude?.toString() ?? '');
  const [lon, setLon] = useState(venue.longitude?.toString() ?? '');
  const [radius, setRadius] = useState(venue.geofenceM?.toString() ?? '');
  const [error, saved, submit] = useSubmit();
  const num = (v: string) => (v.trim() ? Number(v) : null);
  return (
    <Panel title={t.setup.location}>
      <p className="note">{t.setup.locationHelp}</p>
      <form
        onSubmit={submit(t.setup.location, async () => {
          await request(SetVenueGeofence, { venueId: venue.id, latitude: num(lat), longitude: num(lon), radiusM: num(radius) });
          await onSaved();
        })}
      >
        <div className="columns">
          <Text label={t.setup.latitude} value={lat} set={setLat} type="number" step="any" required={false} />
          <Text label={t.setup.longitude} value={lon} set={setLon} type="number" step="any" required={false} />
          <Text label={t.setup.radius} value={radius} set={setRadius} type="number" min={10} required={false} />
        </div>
        <button type="submit">{t.setup.saveLocation}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

function StationForm({ venue, onCreated }: { venue: Venue; onCreated: () => void }) {
  const [name, setName] = useState('');
  const [kind, setKind] = useState<StationKind>('PC');
  const [control, setControl] = useState<StationControl>('MANUAL');
  const [values, setValues] = useState<Record<string, string>>({});
  const [connectors, setConnectors] = useState('1');
  const [selfService, setSelfService] = useState(false);
  const [error, saved, submit] = useSubmit();
  return (
    <Panel title={t.setup.station}>
      <form
        onSubmit={submit(`${t.setup.station} ${name}`, async () => {
          const created = await request(CreateStation, {
            input: {
              venueId: venue.id,
              name,
              kind,
              control,
              controlSettings: controlSettings(control, values),
              connectorCount: hasConnectors(kind) ? Number.parseInt(connectors, 10) : null,
            },
          });
          if (selfService) await request(UpdateStation, { id: created.createStation.id, input: { selfService: true } });
          // Kind and control stay for the next one of the same sort; letting patrons start it is asked each time.
          setName('');
          setValues({});
          setSelfService(false);
          onCreated();
        })}
      >
        <Text label={t.setup.stationName} value={name} set={setName} />
        <label>
          {t.setup.kind}
          <select value={kind} onChange={(e) => setKind(e.target.value as StationKind)}>
            {StationKindValues.map((k) => <option key={k} value={k}>{k.replace(/_/g, ' ').toLowerCase()}</option>)}
          </select>
        </label>
        <ControlFields control={control} setControl={setControl} values={values} setValues={setValues} />
        {hasConnectors(kind) && (
          <Text label={t.setup.connectors} value={connectors} set={setConnectors} type="number" min={kind === 'EV_CHARGER' ? 1 : 0} />
        )}
        <label className="inline">
          <input type="checkbox" checked={selfService} onChange={(e) => setSelfService(e.target.checked)} />
          {t.setup.selfService}
        </label>
        <button type="submit">{t.setup.createStation}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

function BridgeForm({ venue }: { venue: Venue }) {
  const [name, setName] = useState('');
  const [bridges, setBridges] = useState<BridgesResult['bridges']>([]);
  const [command, setCommand] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);
  const [error, saved, submit] = useSubmit();
  const load = async () => setBridges((await request(Bridges, { venueId: venue.id })).bridges);
  useEffect(() => {
    setCommand(null);
    void load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [venue.id]);
  const cloud = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/edge/v1/tunnel`;
  return (
    <Panel title={t.setup.bridge}>
      <ul>
        {bridges.filter((b) => !b.revokedAt).map((b) => (
          <li key={b.id}>
            {b.name} · {b.online ? t.setup.online : t.setup.offline}
          </li>
        ))}
      </ul>
      <form
        onSubmit={submit(t.setup.bridge, async () => {
          const r = await request(CreateBridge, { venueId: venue.id, name });
          setCommand(`BRIDGE_CLOUD_URL=${cloud} BRIDGE_TOKEN=${r.createBridge.token} edge-bridge`);
          setCopied(false);
          setName('');
          await load();
        })}
      >
        <Text label={t.setup.bridgeName} value={name} set={setName} />
        <button type="submit">{t.setup.createBridge}</button>
        <Outcome error={error} saved={saved} />
      </form>
      {command && (
        <div className="install">
          <p id="bridge-install">{t.setup.bridgeInstall}</p>
          <pre aria-labelledby="bridge-install" data-testid="bridge-command">{command}</pre>
          <button
            type="button"
            onClick={async () => {
              await navigator.clipboard?.writeText(command).catch(() => undefined);
              setCopied(true);
            }}
          >
            {t.setup.copy}
          </button>
          {copied && <span role="status"> {t.setup.copied}</span>}
        </div>
      )}
    </Panel>
  );
}
