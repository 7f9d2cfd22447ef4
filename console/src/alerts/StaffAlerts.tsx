import { useEffect, useState } from 'react';
import { request } from '../api/client';
import { AcknowledgeSos, ResolveSos, StaffAlerts } from '../api/generated';
import { subscribe } from '../api/live';
import { t } from '../i18n';
import { dismissEject, openEjects, openSos, type EjectAlert, type SosAlert } from './model';

/** Sounds an alarm: three short tones (browsers may keep it silent until the page has been clicked once). */
function alarm() {
  try {
    const Ctx = window.AudioContext ?? (window as unknown as { webkitAudioContext: typeof AudioContext }).webkitAudioContext;
    const ctx = new Ctx();
    [0, 0.3, 0.6].forEach((at) => {
      const o = ctx.createOscillator();
      o.frequency.value = 880;
      o.connect(ctx.destination);
      o.start(ctx.currentTime + at);
      o.stop(ctx.currentTime + at + 0.18);
    });
  } catch {
    // No audio here: the banner still shows.
  }
}

/** Open SOS alerts of the member's venues, shown (and sounded) the moment they are raised, with acknowledge and
 * resolve; and ejects that came to wait for staff, shown until their answer comes or they are dismissed. */
export function StaffAlertBanner() {
  const [alerts, setAlerts] = useState<SosAlert[]>([]);
  const [ejects, setEjects] = useState<EjectAlert[]>([]);
  useEffect(
    () =>
      subscribe(StaffAlerts, {}, {
        next: (d) => {
          const e = d.staffAlerts;
          setAlerts((current) => {
            const next = openSos(current, e);
            if (e.kind === 'sos.raised' && next.length > current.length) alarm();
            return next;
          });
          setEjects((current) => openEjects(current, e));
        },
      }),
    [],
  );
  if (alerts.length === 0 && ejects.length === 0) return null;
  return (
    <>
      {ejects.length > 0 && (
        <section className="sos" aria-label={t.ejectAlert.title}>
          {ejects.map((a) => (
            <div key={a.id} role="alert" className="sos-alert eject">
              {t.ejectAlert.needsLook(a.cabinet, a.slot, a.asset)}
              <span className="actions">
                <button type="button" onClick={() => setEjects((current) => dismissEject(current, a.id))}>
                  {t.ejectAlert.dismiss}
                </button>
              </span>
            </div>
          ))}
        </section>
      )}
      {alerts.length > 0 && <SosList alerts={alerts} />}
    </>
  );
}

function SosList({ alerts }: { alerts: SosAlert[] }) {
  return (
    <section className="sos" aria-label={t.sos.title}>
      {alerts.map((a) => (
        <div key={a.id} role="alert" className={`sos-alert ${a.status}`}>
          <strong>{t.sos.raised}</strong> {a.location && `${t.sos.at} ${a.location}`} {a.note && `— ${a.note}`}
          {a.status === 'acknowledged' && <span> ({t.sos.acknowledged})</span>}
          <span className="actions">
            {a.status === 'raised' && (
              <button type="button" onClick={() => void request(AcknowledgeSos, { id: a.id })}>
                {t.sos.acknowledge}
              </button>
            )}
            <button type="button" onClick={() => void request(ResolveSos, { id: a.id })}>
              {t.sos.resolve}
            </button>
          </span>
        </div>
      ))}
    </section>
  );
}
