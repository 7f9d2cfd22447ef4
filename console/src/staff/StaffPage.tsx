import { useEffect, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import {
  AuditLog,
  ChangeMemberRole,
  InviteMember,
  Members,
  RemoveMember,
  RoleValues,
  SetMemberVenues,
  type AuditLogResult,
  type MembersResult,
  type Role,
} from '../api/generated';
import { t } from '../i18n';
import { dayStart, Period } from '../period';
import { Outcome, Panel, Text } from '../ui';

type Data = MembersResult;

/** Members with their roles and venue scope, invitations, and the audit log (owners and managers). */
export function StaffPage() {
  const [data, setData] = useState<Data | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Bumped after every change, so the audit log shows it.
  const [generation, setGeneration] = useState(0);
  const load = async () => {
    setData(await request(Members, {}));
    setGeneration((g) => g + 1);
  };
  useEffect(() => {
    void load();
  }, []);
  const act = async (f: () => Promise<unknown>) => {
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : t.errors.generic);
    }
    await load();
  };
  if (!data) return null;
  return (
    <section aria-labelledby="staff-title">
      <h1 id="staff-title">{t.staff.title}</h1>
      {error && <p role="alert" className="error">{error}</p>}
      <table className="list">
        <thead>
          <tr>
            <th scope="col">{t.staff.email}</th>
            <th scope="col">{t.staff.role}</th>
            <th scope="col">{t.staff.venues}</th>
            <th scope="col"><span className="sr-only">{t.staff.remove}</span></th>
          </tr>
        </thead>
        <tbody>
          {data.members.map((m) => (
            <tr key={m.userId}>
              <td>{m.email}</td>
              <td>
                <select aria-label={t.staff.roleOf(m.email)} value={m.role} onChange={(e) => act(() => request(ChangeMemberRole, { userId: m.userId, role: e.target.value as Role }))}>
                  {RoleValues.map((r) => <option key={r} value={r}>{r.toLowerCase()}</option>)}
                </select>
              </td>
              <td>
                {m.role === 'OWNER' ? (
                  t.staff.allVenues
                ) : (
                  <select
                    aria-label={t.staff.venuesOf(m.email)}
                    value={m.venueIds?.[0] ?? ''}
                    onChange={(e) => act(() => request(SetMemberVenues, { userId: m.userId, venueIds: e.target.value ? [e.target.value] : null }))}
                  >
                    <option value="">{t.staff.allVenues}</option>
                    {data.venues.map((v) => <option key={v.id} value={v.id}>{v.name}</option>)}
                  </select>
                )}
                {(m.venueIds?.length ?? 0) > 1 && ` (+${(m.venueIds?.length ?? 1) - 1})`}
              </td>
              <td>
                <button type="button" className="danger" aria-label={t.staff.removeOf(m.email)} onClick={() => act(() => request(RemoveMember, { userId: m.userId }))}>
                  {t.staff.remove}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Invite venues={data.venues} onInvited={load} />
      <Audit data={data} generation={generation} />
    </section>
  );
}

function Invite({ venues, onInvited }: { venues: Data['venues']; onInvited: () => Promise<void> }) {
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>('STAFF');
  const [venue, setVenue] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  return (
    <Panel title={t.staff.invite}>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          setSaved(null);
          try {
            await request(InviteMember, { email, role, venueIds: venue ? [venue] : null });
            setSaved(t.staff.invited(email));
            setEmail('');
            await onInvited();
          } catch (err) {
            setError(err instanceof ApiError ? (err.field ? `${err.field}: ${err.message}` : err.message) : t.errors.generic);
          }
        }}
      >
        <Text label={t.staff.email} value={email} set={setEmail} type="email" />
        <label>
          {t.staff.role}
          <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {RoleValues.map((r) => <option key={r} value={r}>{r.toLowerCase()}</option>)}
          </select>
        </label>
        <label>
          {t.staff.venues}
          <select value={venue} onChange={(e) => setVenue(e.target.value)}>
            <option value="">{t.staff.allVenues}</option>
            {venues.map((v) => <option key={v.id} value={v.id}>{v.name}</option>)}
          </select>
        </label>
        <button type="submit">{t.staff.inviteSubmit}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

/** What the audit log records changes of. */
const AUDITED = ['tenant', 'venue', 'station', 'tariff', 'patron', 'rfid_tag', 'session', 'asset', 'quote', 'member', 'invitation', 'charger', 'payment', 'invoice', 'report', 'report_kind', 'shift', 'task', 'sos', 'safety_entry', 'venue_checkin'];

/** The audit log, newest first, filtered by who, what kind of object, which action and when. */
function Audit({ data, generation }: { data: Data; generation: number }) {
  const [actor, setActor] = useState('');
  const [objectType, setObjectType] = useState('');
  const [action, setAction] = useState('');
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [audit, setAudit] = useState<AuditLogResult['auditLog']>([]);
  const [failed, setFailed] = useState<string | null>(null);
  useEffect(() => {
    // A later filter's answer wins even when an earlier one arrives after it.
    let current = true;
    setFailed(null);
    request(AuditLog, {
      actorUserId: actor || null,
      objectType: objectType || null,
      action: action.trim() || null,
      from: dayStart(from),
      to: dayStart(to),
      limit: 100,
    }).then(
      (r) => current && setAudit(r.auditLog),
      (e: unknown) => current && setFailed(e instanceof ApiError ? e.message : t.errors.generic),
    );
    return () => {
      current = false;
    };
  }, [actor, objectType, action, from, to, generation]);
  const venueName = (id: string) => data.venues.find((v) => v.id === id)?.name ?? id;
  const email = (id: string | null) => data.members.find((m) => m.userId === id)?.email ?? '—';
  return (
    <>
      <h2>{t.staff.audit}</h2>
      <fieldset className="filters">
        <legend>{t.staff.auditFilters}</legend>
        <label>
          {t.staff.who}
          <select value={actor} onChange={(e) => setActor(e.target.value)}>
            <option value="">{t.staff.anyone}</option>
            {data.members.map((m) => (
              <option key={m.userId} value={m.userId}>{m.email}</option>
            ))}
          </select>
        </label>
        <label>
          {t.staff.object}
          <select value={objectType} onChange={(e) => setObjectType(e.target.value)}>
            <option value="">{t.staff.anything}</option>
            {AUDITED.map((o) => (
              <option key={o} value={o}>{o.replace(/_/g, ' ')}</option>
            ))}
          </select>
        </label>
        <label>
          {t.staff.actionExact}
          <input type="search" value={action} onChange={(e) => setAction(e.target.value)} />
        </label>
        <Period from={from} setFrom={setFrom} to={to} setTo={setTo} toLabel={t.staff.before} />
      </fieldset>
      {failed && <p role="alert" className="error">{failed}</p>}
      <table className="list" data-testid="audit-log">
        <thead>
          <tr>
            <th scope="col">{t.staff.when}</th>
            <th scope="col">{t.staff.who}</th>
            <th scope="col">{t.staff.action}</th>
            <th scope="col">{t.staff.object}</th>
          </tr>
        </thead>
        <tbody>
          {audit.map((a) => (
            <tr key={a.id}>
              <td>{new Date(a.createdAt).toLocaleString('en-GB')}</td>
              <td>{email(a.actorUserId)}</td>
              <td>{a.action}</td>
              <td>{a.objectType}{a.objectType === 'venue' && a.objectId ? ` ${venueName(a.objectId)}` : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}
