import { t } from './i18n';

/** A `yyyy-mm-dd` date field as the start of that day in the browser's time zone (ISO), or null when empty. */
export function dayStart(day: string): string | null {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) return null;
  const [y, m, d] = day.split('-').map(Number);
  return new Date(y, m - 1, d).toISOString();
}

/** Two date fields of a list filter: from (inclusive) and to (exclusive), as `yyyy-mm-dd` in the browser's zone. */
export function Period(props: { from: string; setFrom: (v: string) => void; to: string; setTo: (v: string) => void; toLabel: string }) {
  return (
    <>
      <label>
        {t.sessions.from}
        <input type="date" value={props.from} onChange={(e) => props.setFrom(e.target.value)} />
      </label>
      <label>
        {props.toLabel}
        <input type="date" value={props.to} onChange={(e) => props.setTo(e.target.value)} />
      </label>
    </>
  );
}
