import { useState, type FormEvent, type ReactNode } from 'react';
import { auth, restError, ApiError } from '../api/auth';
import { t } from '../i18n';
import { go } from '../router';

function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.code === 'network' ? t.errors.network : e.message;
  return t.errors.generic;
}

function Card({ title, children }: { title: string; children: ReactNode }) {
  return (
    <main className="card">
      <h1>{title}</h1>
      {children}
    </main>
  );
}

function Field(props: { label: string; name: string; type?: string; value: string; set: (v: string) => void; autoComplete?: string }) {
  return (
    <label>
      {props.label}
      <input
        name={props.name}
        type={props.type ?? 'text'}
        value={props.value}
        autoComplete={props.autoComplete}
        required
        onChange={(e) => props.set(e.target.value)}
      />
    </label>
  );
}

function Link({ to, children }: { to: 'login' | 'signup' | 'forgot'; children: ReactNode }) {
  return (
    <a href={`/console/${to}`} onClick={(e) => { e.preventDefault(); go(to); }}>
      {children}
    </a>
  );
}

async function post(path: string, body: unknown): Promise<void> {
  const r = await fetch(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!r.ok) throw await restError(r);
}

export function LoginPage() {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await auth.login(email, password);
      if (location.pathname.match(/\/(login|signup|forgot)$/)) go('floor');
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <Card title={t.login.title}>
      <form onSubmit={submit}>
        <Field label={t.login.email} name="email" type="email" value={email} set={setEmail} autoComplete="username" />
        <Field label={t.login.password} name="password" type="password" value={password} set={setPassword} autoComplete="current-password" />
        {error && <p role="alert" className="error">{t.login.failed}: {error}</p>}
        <button type="submit">{t.login.submit}</button>
      </form>
      <p><Link to="signup">{t.login.noAccount}</Link></p>
      <p><Link to="forgot">{t.login.forgot}</Link></p>
    </Card>
  );
}

export function SignupPage() {
  const [organization, setOrganization] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await post('/api/v1/auth/signup', { organization, email, password });
      setDone(true);
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <Card title={t.signup.title}>
      {done ? (
        <p role="status">{t.signup.done}</p>
      ) : (
        <form onSubmit={submit}>
          <Field label={t.signup.organization} name="organization" value={organization} set={setOrganization} autoComplete="organization" />
          <Field label={t.login.email} name="email" type="email" value={email} set={setEmail} autoComplete="username" />
          <Field label={t.login.password} name="password" type="password" value={password} set={setPassword} autoComplete="new-password" />
          {error && <p role="alert" className="error">{error}</p>}
          <button type="submit">{t.signup.submit}</button>
        </form>
      )}
      <p><Link to="login">{t.signup.haveAccount}</Link></p>
    </Card>
  );
}

export function ForgotPage() {
  const [email, setEmail] = useState('');
  const [code, setCode] = useState('');
  const [password, setPassword] = useState('');
  const [stage, setStage] = useState<'ask' | 'reset' | 'done'>('ask');
  const [error, setError] = useState<string | null>(null);
  const ask = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await post('/api/v1/auth/password/forgot', { email });
      setStage('reset');
    } catch (err) {
      setError(errorText(err));
    }
  };
  const reset = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    try {
      await post('/api/v1/auth/password/reset', { token: code, password });
      setStage('done');
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <Card title={t.forgot.title}>
      {stage === 'ask' && (
        <form onSubmit={ask}>
          <Field label={t.login.email} name="email" type="email" value={email} set={setEmail} autoComplete="username" />
          <button type="submit">{t.forgot.submit}</button>
        </form>
      )}
      {stage === 'reset' && (
        <form onSubmit={reset}>
          <p role="status">{t.forgot.done}</p>
          <Field label={t.forgot.code} name="code" value={code} set={setCode} autoComplete="one-time-code" />
          <Field label={t.forgot.newPassword} name="password" type="password" value={password} set={setPassword} autoComplete="new-password" />
          <button type="submit">{t.forgot.reset}</button>
        </form>
      )}
      {stage === 'done' && <p role="status">{t.forgot.resetDone}</p>}
      {error && <p role="alert" className="error">{error}</p>}
      <p><Link to="login">{t.forgot.back}</Link></p>
    </Card>
  );
}
