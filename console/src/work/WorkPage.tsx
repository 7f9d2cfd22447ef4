import { useEffect, useRef, useState } from 'react';
import { ApiError } from '../api/auth';
import { request } from '../api/client';
import {
  AssignTask,
  CancelTask,
  ClockIn,
  ClockOut,
  CompleteTask,
  CreateTask,
  LiveEvents,
  Me,
  Members,
  OnShift,
  Stations,
  Tasks,
  TaskStateValues,
  Venues,
  type MembersResult,
  type OnShiftResult,
  type StationsResult,
  type TasksResult,
  type TaskState,
  type VenuesResult,
} from '../api/generated';
import { subscribe } from '../api/live';
import { t } from '../i18n';
import { Outcome, Panel, Text, useSubmit } from '../ui';

const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString('en-GB') : '—');

/** Monday 00:00 of this week in the browser's time zone: where the hours table starts. */
export function weekStart(now: Date): Date {
  const d = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  d.setDate(d.getDate() - ((d.getDay() + 6) % 7));
  return d;
}

type Who = { userId: string; role: string };

/** Shifts and tasks: clock in and out, who is on shift and the week's hours; the venue's tasks to create, assign,
 * complete and cancel. Reloaded on every live event (`shift.*`, `task.*` reach the venue's members). */
export function WorkPage() {
  const [me, setMe] = useState<Who | null>(null);
  const [shifts, setShifts] = useState<OnShiftResult | null>(null);
  const [tasks, setTasks] = useState<TasksResult['tasks']>([]);
  const [members, setMembers] = useState<MembersResult | null>(null);
  const [stations, setStations] = useState<StationsResult['stations']>([]);
  const [venues, setVenues] = useState<VenuesResult['venues'] | null>(null);
  const [state, setState] = useState<TaskState>('OPEN');
  const [mine, setMine] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const manager = me !== null && me.role !== 'STAFF';

  const loadShifts = async () => {
    const now = new Date();
    setShifts(await request(OnShift, { from: weekStart(now).toISOString(), to: new Date(now.getTime() + 60_000).toISOString() }));
  };
  // Tasks of the filter as it is now: an answer to an earlier filter that arrives late is dropped.
  const filter = useRef({ mine, state });
  filter.current = { mine, state };
  const loadTasks = async () => {
    const asked = filter.current;
    const r = await request(Tasks, asked);
    if (filter.current.mine === asked.mine && filter.current.state === asked.state) setTasks(r.tasks);
  };
  useEffect(() => {
    void request(Me, {}).then((r) => {
      setMe({ userId: r.me.userId, role: r.me.role });
      if (r.me.role !== 'STAFF') void request(Members, {}).then(setMembers);
    });
    void request(Stations, {}).then((r) => setStations(r.stations));
    void request(Venues, {}).then((r) => setVenues(r.venues));
  }, []);
  useEffect(() => {
    void loadShifts();
    void loadTasks();
    return subscribe(LiveEvents, {}, {
      next: (r) => {
        const kind = r.liveEvents.kind;
        if (kind.startsWith('shift.')) void loadShifts();
        if (kind.startsWith('task.')) void loadTasks();
      },
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [mine, state]);
  // The clock-in form chooses among the venues: until they are here it would have nothing to submit.
  if (!me || !shifts || !venues) return null;

  const venueName = (id: string) => venues.find((v) => v.id === id)?.name ?? '';
  const email = (id: string | null | undefined) => (id ? members?.members.find((m) => m.userId === id)?.email ?? (id === me.userId ? t.work.me : '—') : '—');
  const stationName = (id: string | null | undefined) => (id ? stations.find((s) => s.id === id)?.name ?? '' : '');
  const own = shifts.onShift.find((s) => s.userId === me.userId);
  const act = async (f: () => Promise<unknown>) => {
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : t.errors.generic);
    }
    await Promise.all([loadShifts(), loadTasks()]);
  };

  return (
    <section aria-labelledby="work-title">
      <h1 id="work-title">{t.work.title}</h1>
      {error && <p role="alert" className="error">{error}</p>}
      <Panel title={t.work.myShift}>
        {own ? (
          <p>
            {t.work.onShiftSince(when(own.startedAt), venueName(own.venueId))}{' '}
            <button type="button" onClick={() => void act(() => request(ClockOut, { shiftId: null }))}>{t.work.clockOut}</button>
          </p>
        ) : (
          <ClockInForm venues={venues} onClockIn={(venueId) => act(() => request(ClockIn, { venueId }))} />
        )}
      </Panel>
      <Panel title={t.work.onShift}>
        {shifts.onShift.length === 0 ? (
          <p>{t.work.nobody}</p>
        ) : (
          <ul data-testid="on-shift">
            {shifts.onShift.map((s) => (
              <li key={s.id}>
                {s.email} · {venueName(s.venueId)} · {t.work.since} {when(s.startedAt)}
                {manager && s.userId !== me.userId && (
                  <>
                    {' '}
                    <button type="button" onClick={() => void act(() => request(ClockOut, { shiftId: s.id }))}>
                      {t.work.clockOutOf(s.email)}
                    </button>
                  </>
                )}
              </li>
            ))}
          </ul>
        )}
        <h3>{t.work.hours}</h3>
        <table className="list" data-testid="hours">
          <thead>
            <tr>
              <th scope="col">{t.work.member}</th>
              <th scope="col" className="num">{t.work.shifts}</th>
              <th scope="col" className="num">{t.work.hoursCol}</th>
            </tr>
          </thead>
          <tbody>
            {shifts.shiftHours.map((h) => (
              <tr key={h.userId}>
                <td>{h.email}</td>
                <td className="num">{h.shifts}</td>
                <td className="num">{h.hours.toFixed(2)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Panel>
      <Panel title={t.work.tasks}>
        <fieldset className="filters">
          <legend>{t.work.taskFilters}</legend>
          <label>
            {t.work.state}
            <select value={state} onChange={(e) => setState(e.target.value as TaskState)}>
              {TaskStateValues.map((s) => (
                <option key={s} value={s}>{s.toLowerCase()}</option>
              ))}
            </select>
          </label>
          <label className="inline">
            <input type="checkbox" checked={mine} onChange={(e) => setMine(e.target.checked)} />
            {t.work.mine}
          </label>
        </fieldset>
        {tasks.length === 0 ? (
          <p>{t.work.noTasks}</p>
        ) : (
          <ul className="tasks" data-testid="tasks">
            {tasks.map((task) => (
              <li key={task.id} aria-label={task.title}>
                <strong>{task.title}</strong>
                {task.overdue && <span className="warn"> · {t.work.overdue}</span>}
                <br />
                {[venueName(task.venueId), stationName(task.stationId), `${t.work.assignee}: ${email(task.assigneeUserId)}`, `${t.work.due}: ${when(task.dueAt)}`, task.status.toLowerCase()]
                  .filter(Boolean)
                  .join(' · ')}
                {task.note && <p>{task.note}</p>}
                {task.status === 'OPEN' && (
                  <div className="actions">
                    {(manager || task.assigneeUserId === me.userId) && (
                      <button type="button" onClick={() => void act(() => request(CompleteTask, { id: task.id }))}>{t.work.complete}</button>
                    )}
                    {manager && (
                      <>
                        <label className="inline">
                          {t.work.assignTo}
                          <select
                            value={task.assigneeUserId ?? ''}
                            onChange={(e) => e.target.value && void act(() => request(AssignTask, { id: task.id, assigneeUserId: e.target.value }))}
                          >
                            <option value="">—</option>
                            {(members?.members ?? []).map((m) => (
                              <option key={m.userId} value={m.userId}>{m.email}</option>
                            ))}
                          </select>
                        </label>
                        <button type="button" onClick={() => void act(() => request(CancelTask, { id: task.id }))}>{t.work.cancel}</button>
                      </>
                    )}
                  </div>
                )}
              </li>
            ))}
          </ul>
        )}
      </Panel>
      {manager && members && <NewTask members={members} venues={venues} stations={stations} onCreated={loadTasks} />}
    </section>
  );
}

function ClockInForm({ venues, onClockIn }: { venues: VenuesResult['venues']; onClockIn: (venueId: string) => Promise<void> }) {
  const choices = venues;
  const [venueId, setVenueId] = useState('');
  const chosen = venueId || choices[0]?.id || '';
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        if (chosen) void onClockIn(chosen);
      }}
    >
      <label>
        {t.work.venue}
        <select value={chosen} onChange={(e) => setVenueId(e.target.value)}>
          {choices.map((v) => (
            <option key={v.id} value={v.id}>{v.name}</option>
          ))}
        </select>
      </label>
      <button type="submit" disabled={!chosen}>{t.work.clockIn}</button>
    </form>
  );
}

function NewTask({ members, venues, stations, onCreated }: { members: MembersResult; venues: VenuesResult['venues']; stations: StationsResult['stations']; onCreated: () => Promise<void> }) {
  const [venueId, setVenueId] = useState('');
  const venue = venueId || venues[0]?.id || '';
  const [stationId, setStationId] = useState('');
  const [title, setTitle] = useState('');
  const [note, setNote] = useState('');
  const [assignee, setAssignee] = useState('');
  const [due, setDue] = useState('');
  const [error, saved, submit] = useSubmit();
  return (
    <Panel title={t.work.newTask}>
      <form
        onSubmit={submit(t.work.newTask, async () => {
          await request(CreateTask, {
            input: {
              venueId: venue,
              stationId: stationId || null,
              title: title.trim(),
              note: note.trim() || null,
              assigneeUserId: assignee || null,
              dueAt: due ? new Date(due).toISOString() : null,
            },
          });
          setTitle('');
          setNote('');
          await onCreated();
        })}
      >
        <label>
          {t.work.venue}
          <select value={venue} onChange={(e) => { setVenueId(e.target.value); setStationId(''); }}>
            {venues.map((v) => (
              <option key={v.id} value={v.id}>{v.name}</option>
            ))}
          </select>
        </label>
        <label>
          {t.work.station}
          <select value={stationId} onChange={(e) => setStationId(e.target.value)}>
            <option value="">{t.work.noStation}</option>
            {stations.filter((s) => s.venueId === venue).map((s) => (
              <option key={s.id} value={s.id}>{s.name}</option>
            ))}
          </select>
        </label>
        <Text label={t.work.taskTitle} value={title} set={setTitle} />
        <Text label={t.work.note} value={note} set={setNote} required={false} />
        <label>
          {t.work.assignee}
          <select value={assignee} onChange={(e) => setAssignee(e.target.value)}>
            <option value="">{t.work.unassigned}</option>
            {members.members.map((m) => (
              <option key={m.userId} value={m.userId}>{m.email}</option>
            ))}
          </select>
        </label>
        <Text label={t.work.dueAt} value={due} set={setDue} type="datetime-local" required={false} />
        <button type="submit">{t.work.create}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}
