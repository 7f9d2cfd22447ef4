// What each station control needs to reach its device (`controlSettings`), as set-up fields; the server checks
// the same (`core::stations::check_control_settings`) and names what is missing.
import type { StationControl, StationKind } from '../api/generated';
import { t } from '../i18n';

export type ControlField = { key: string; label: string; numeric?: boolean; required: boolean; hint?: string };

export function controlFields(control: StationControl): ControlField[] {
  const f = t.setup.fields;
  switch (control) {
    case 'SHELLY':
      return [
        { key: 'host', label: f.host, required: true, hint: f.hostHint },
        { key: 'generation', label: f.generation, numeric: true, required: false },
      ];
    case 'TASMOTA':
      return [{ key: 'topic', label: f.topic, required: true }];
    case 'MIKROTIK':
      return [
        { key: 'host', label: f.host, required: true, hint: f.hostHint },
        { key: 'mac', label: f.mac, required: false },
        { key: 'interface', label: f.iface, required: false },
        { key: 'credentials_ref', label: f.credentialsRef, required: false },
      ];
    case 'OCPP':
      return [{ key: 'charge_point_id', label: f.chargePointId, required: true }];
    case 'CABINET':
      return [{ key: 'cabinet_id', label: f.cabinetId, required: true }];
    default:
      return [];
  }
}

/** The `controlSettings` object from the fields as typed: empty ones left out, numbers as numbers. */
export function controlSettings(control: StationControl, values: Record<string, string>): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const field of controlFields(control)) {
    const v = (values[field.key] ?? '').trim();
    if (!v) continue;
    out[field.key] = field.numeric && /^\d+$/.test(v) ? Number(v) : v;
  }
  return out;
}

/** The settings to save for a station whose control stays `control`: what it has, with the fields the form shows
 * as typed (an emptied one removed); keys the form does not show are kept. `null` when nothing changed. */
export function changedSettings(
  control: StationControl,
  existing: Record<string, unknown>,
  values: Record<string, string>,
): Record<string, unknown> | null {
  const merged: Record<string, unknown> = { ...existing };
  const typed = controlSettings(control, values);
  for (const field of controlFields(control)) {
    if (field.key in typed) merged[field.key] = typed[field.key];
    else delete merged[field.key];
  }
  const same = Object.keys(merged).length === Object.keys(existing).length && Object.keys(merged).every((k) => merged[k] === existing[k]);
  return same ? null : merged;
}

/** Stations whose kind has connectors (EV chargers) or slots (powerbank cabinets) ask how many. */
export const hasConnectors = (kind: StationKind) => kind === 'EV_CHARGER' || kind === 'POWERBANK_CABINET';
