import { useRef, useState, type FormEvent, type ReactNode } from 'react';
import { ApiError } from './api/auth';
import { t } from './i18n';

// Form pieces every console page uses.

/** A form's submit handler with its outcome. A submit while the form's last one is still on its way is ignored (a
 * double click sends once). */
export function useSubmit(): [string | null, string | null, (what: string, f: () => Promise<unknown>) => (e: FormEvent) => Promise<void>] {
  const [error, setError] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const sending = useRef(false);
  const submit = (what: string, f: () => Promise<unknown>) => async (e: FormEvent) => {
    e.preventDefault();
    if (sending.current) return;
    sending.current = true;
    setError(null);
    // Said while the request is on its way (at most the request timeout), so a slow save is not taken for none.
    setSaved(t.setup.saving);
    try {
      await f();
      setSaved(t.setup.saved(what));
    } catch (err) {
      setSaved(null);
      setError(err instanceof ApiError ? (err.field ? `${err.field}: ${err.message}` : err.message) : t.errors.generic);
    } finally {
      sending.current = false;
    }
  };
  return [error, saved, submit];
}

export function Outcome({ error, saved }: { error: string | null; saved: string | null }) {
  return (
    <>
      {error && <p role="alert" className="error">{error}</p>}
      {saved && <p role="status" className="saved">{saved}</p>}
    </>
  );
}

export function Text(props: { label: string; value: string; set: (v: string) => void; type?: string; required?: boolean; min?: number; step?: string }) {
  return (
    <label>
      {props.label}
      <input type={props.type ?? 'text'} value={props.value} min={props.min} step={props.step} required={props.required ?? true} onChange={(e) => props.set(e.target.value)} />
    </label>
  );
}

export function Panel({ title, children }: { title: string; children: ReactNode }) {
  const id = `panel-${title.toLowerCase().replace(/\W+/g, '-')}`;
  return (
    <section className="panel" aria-labelledby={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

