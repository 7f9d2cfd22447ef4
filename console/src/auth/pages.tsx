import { useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { auth, restError, ApiError } from '../api/auth';
import { t } from '../i18n';
import { go, takeToken } from '../router';

function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.code === 'network' ? t.errors.network : e.message;
  if ((e as { name?: unknown } | null)?.name === 'AbortError') return t.errors.timeout;
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

/** Asks for a reset code by email, then sets a new password with it; opened from the email's link (`code`
 * given), it starts at the second step. */
export function ForgotPage({ code: emailed }: { code?: string } = {}) {
  const [email, setEmail] = useState('');
  const [code, setCode] = useState(emailed ?? '');
  const [password, setPassword] = useState('');
  const [stage, setStage] = useState<'ask' | 'reset' | 'done'>(emailed ? 'reset' : 'ask');
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
          {!emailed && <p role="status">{t.forgot.done}</p>}
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

/** The reset link from the email: the code filled in, a new password asked for. */
export function ResetPasswordPage() {
  const [code] = useState(takeToken);
  return <ForgotPage code={code} />;
}

/** The verification link from the email: the address is confirmed at once. */
export function VerifyEmailPage() {
  const [token] = useState(takeToken);
  const [state, setState] = useState<'working' | 'done' | string>('working');
  useEffect(() => {
    post('/api/v1/auth/verify-email', { token }).then(
      () => setState('done'),
      (e: unknown) => setState(errorText(e)),
    );
  }, [token]);
  return (
    <Card title={t.verify.title}>
      {state === 'working' && <p role="status">{t.verify.working}</p>}
      {state === 'done' && <p role="status">{t.verify.done}</p>}
      {state !== 'working' && state !== 'done' && <p role="alert" className="error">{state}</p>}
      <p><Link to="login">{t.forgot.back}</Link></p>
    </Card>
  );
}

/** The invitation link from the email: a new login chooses its password and joins the team (a login that exists
 * already joins with the password it has, left empty here). */
export function AcceptInvitationPage() {
  const [token] = useState(takeToken);
  const [password, setPassword] = useState('');
  const [done, setDone] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    const r = await fetch('/graphql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        query: 'mutation($t: String!, $p: String) { acceptInvitation(token: $t, password: $p) { tenantId } }',
        variables: { t: token, p: password || null },
      }),
    }).then((r) => r.json() as Promise<{ errors?: { message: string }[] }>, () => ({ errors: [{ message: t.errors.network }] }));
    if (r.errors?.length) setError(r.errors[0].message);
    else setDone(true);
  };
  return (
    <Card title={t.accept.title}>
      {done ? (
        <p role="status">{t.accept.done}</p>
      ) : (
        <form onSubmit={submit}>
          <p>{t.accept.intro}</p>
          <label>
            {t.accept.password}
            <input name="password" type="password" value={password} autoComplete="new-password" onChange={(e) => setPassword(e.target.value)} />
          </label>
          {error && <p role="alert" className="error">{error}</p>}
          <button type="submit">{t.accept.submit}</button>
        </form>
      )}
      <p><Link to="login">{t.forgot.back}</Link></p>
    </Card>
  );
}
