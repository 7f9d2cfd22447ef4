import { useEffect, useState } from 'react';
import { auth } from './api/auth';
import { request } from './api/client';
import { Me, SignOutEverywhere, type MeResult } from './api/generated';
import { closeLive } from './api/live';
import { StaffAlertBanner } from './alerts/StaffAlerts';
import { applyBranding, onLogo } from './brand/apply';
import { AcceptInvitationPage, ForgotPage, LoginPage, ResetPasswordPage, SignupPage, VerifyEmailPage } from './auth/pages';
import { ChargersPage } from './chargers/ChargersPage';
import { FloorPage } from './floor/FloorPage';
import { knowCurrencies } from './floor/model';
import { PatronsPage } from './patrons/PatronsPage';
import { SessionsPage } from './sessions/SessionsPage';
import { t } from './i18n';
import { go, usePage } from './router';
import { ReportsPage } from './reports/ReportsPage';
import { SettingsPage } from './settings/SettingsPage';
import { SetupPage } from './setup/SetupPage';
import { StaffPage } from './staff/StaffPage';
import { WorkPage } from './work/WorkPage';
import { RentalsPage } from './rentals/RentalsPage';

type Member = MeResult['me'];

export function App() {
  const page = usePage();
  const [checked, setChecked] = useState(false);
  const [me, setMe] = useState<Member | null>(null);
  const [logo, setLogo] = useState<string | null>(null);

  useEffect(() => {
    const load = async (signedIn: boolean) => {
      if (!signedIn) {
        setMe(null);
        applyBranding(null);
        closeLive();
        return;
      }
      try {
        const r = await request(Me, {});
        knowCurrencies(r.currencies);
        setMe(r.me);
        applyBranding(r.branding);
      } catch {
        setMe(null);
      }
    };
    const off = auth.onChange((s) => void load(s));
    const offLogo = onLogo(setLogo);
    // A reload: the cookie may still hold a sign-in.
    void auth
      .refresh()
      .catch(() => null)
      .finally(() => setChecked(true));
    return () => {
      off();
      offLogo();
    };
  }, []);

  // An emailed link opens its page whether or not someone is signed in here.
  if (page === 'verify-email') return <VerifyEmailPage />;
  if (page === 'reset-password') return <ResetPasswordPage />;
  if (page === 'invitations') return <AcceptInvitationPage />;
  if (!checked) return <p className="centered">…</p>;
  if (!me) {
    if (page === 'signup') return <SignupPage />;
    if (page === 'forgot') return <ForgotPage />;
    return <LoginPage />;
  }
  return (
    <div className="shell">
      <header className="top">
        {logo && <img className="logo" src={logo} alt="" />}
        <strong className="brand">{t.appName}</strong>
        <span className="tenant">{me.tenant.name}</span>
        <nav aria-label={t.nav.main}>
          <a href="/console/floor" aria-current={page === 'floor' ? 'page' : undefined} onClick={(e) => { e.preventDefault(); go('floor'); }}>
            {t.nav.floor}
          </a>
          {/* Chargers are for owners and managers (the API keeps chargers and their commands to them). */}
          {(me.role === 'STAFF' ? (['sessions', 'patrons', 'rentals', 'work'] as const) : (['sessions', 'patrons', 'rentals', 'chargers', 'work'] as const)).map((p) => (
            <a key={p} href={`/console/${p}`} aria-current={page === p ? 'page' : undefined} onClick={(e) => { e.preventDefault(); go(p); }}>
              {t.nav[p]}
            </a>
          ))}
          {me.role !== 'STAFF' &&
            (me.role === 'OWNER' ? (['staff', 'reports', 'setup', 'settings'] as const) : (['staff', 'reports', 'setup'] as const)).map((p) => (
              <a key={p} href={`/console/${p}`} aria-current={page === p ? 'page' : undefined} onClick={(e) => { e.preventDefault(); go(p); }}>
                {t.nav[p]}
              </a>
            ))}
        </nav>
        <span className="who">{me.email}</span>
        <button type="button" onClick={() => void auth.logout().catch(() => undefined)}>
          {t.nav.signOut}
        </button>
        <button
          type="button"
          onClick={async () => {
            await request(SignOutEverywhere, {});
            auth.dropped();
          }}
        >
          {t.nav.signOutEverywhere}
        </button>
      </header>
      <StaffAlertBanner />
      <main>
        {page === 'setup' && me.role !== 'STAFF' ? (
          <SetupPage />
        ) : page === 'settings' && me.role === 'OWNER' ? (
          <SettingsPage />
        ) : page === 'reports' && me.role !== 'STAFF' ? (
          <ReportsPage />
        ) : page === 'staff' && me.role !== 'STAFF' ? (
          <StaffPage />
        ) : page === 'rentals' ? (
          <RentalsPage canSettle={me.role !== 'STAFF'} />
        ) : page === 'work' ? (
          <WorkPage />
        ) : page === 'chargers' && me.role !== 'STAFF' ? (
          <ChargersPage />
        ) : page === 'sessions' ? (
          <SessionsPage />
        ) : page === 'patrons' ? (
          <PatronsPage />
        ) : (
          <FloorPage />
        )}
      </main>
    </div>
  );
}
