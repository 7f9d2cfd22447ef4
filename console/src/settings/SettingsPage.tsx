import { useEffect, useState } from 'react';
import { request } from '../api/client';
import { PaymentAccount, RemovePaymentAccount, SetBillingTick, SetBranding, SetChargerMeterSetup, SetChargerOnboarding, SetLegalDetails, SetPaymentAccount, Settings, type PaymentAccountResult, SetStaffCashTopUpCap, Venues, type SettingsResult } from '../api/generated';
import { accentFor } from '../brand/accent';
import { applyBranding } from '../brand/apply';
import { minorDigits } from '../floor/model';
import { t } from '../i18n';
import { toMinor } from '../setup/money';
import { Outcome, Panel, Text, useSubmit } from '../ui';

/** The tenant's settings (owners): the billing tick, the staff cash top-up cap, the legal details on documents, the
 * branding of emails and the console, the chargers' meter set-up, and the tenant's own payment provider keys. */
export function SettingsPage() {
  const [data, setData] = useState<SettingsResult | null>(null);
  // Amounts are minor units of the venues' currency (the first venue's; EUR before there is one). Until the venues
  // are here the billing form would show and save the cap in EUR's minor units, whatever the venues' currency.
  const [currency, setCurrency] = useState<string | null>(null);
  useEffect(() => {
    void request(Settings, {}).then(setData);
    void request(Venues, {}).then((r) => setCurrency(r.venues[0]?.currency ?? 'EUR'));
  }, []);
  if (!data || !currency) return null;
  return (
    <section aria-labelledby="settings-title">
      <h1 id="settings-title">{t.settings.title}</h1>
      <Billing key={currency} data={data} currency={currency} />
      <Legal data={data} />
      <Brand data={data} />
      <Chargers data={data} />
      <Payments />
    </section>
  );
}

function Billing({ data, currency }: { data: SettingsResult; currency: string }) {
  const digits = minorDigits(currency);
  const [tick, setTick] = useState(data.tenant.billingTickSec?.toString() ?? '');
  const [cap, setCap] = useState((data.tenant.staffCashTopUpCap / 10 ** digits).toFixed(digits));
  const [error, saved, submit] = useSubmit();
  return (
    <Panel title={t.settings.billing}>
      <form
        onSubmit={submit(t.settings.billing, async () => {
          await request(SetBillingTick, { seconds: tick.trim() ? Number.parseInt(tick, 10) : null });
          await request(SetStaffCashTopUpCap, { amount: toMinor(cap, currency) });
        })}
      >
        <Text label={t.settings.billingTick} value={tick} set={setTick} type="number" min={1} required={false} />
        <Text label={`${t.settings.cashCap} (${currency})`} value={cap} set={setCap} type="number" step="0.01" min={0} />
        <button type="submit">{t.settings.saveBilling}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

function Legal({ data }: { data: SettingsResult }) {
  const [name, setName] = useState(data.legalDetails.legalName ?? '');
  const [address, setAddress] = useState(data.legalDetails.legalAddress ?? '');
  const [taxId, setTaxId] = useState(data.legalDetails.taxId ?? '');
  const [error, saved, submit] = useSubmit();
  return (
    <Panel title={t.settings.legal}>
      <form
        onSubmit={submit(t.settings.legal, () =>
          request(SetLegalDetails, { legalName: name || null, legalAddress: address || null, taxId: taxId || null }),
        )}
      >
        <Text label={t.settings.legalName} value={name} set={setName} required={false} />
        <Text label={t.settings.legalAddress} value={address} set={setAddress} required={false} />
        <Text label={t.settings.taxId} value={taxId} set={setTaxId} required={false} />
        <button type="submit">{t.settings.saveLegal}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

function Brand({ data }: { data: SettingsResult }) {
  const [logo, setLogo] = useState(data.branding.logoUrl ?? '');
  const [useColor, setUseColor] = useState(data.branding.color != null);
  const [color, setColor] = useState(data.branding.color ?? '#0b5cad');
  const [error, saved, submit] = useSubmit();
  const accent = useColor ? accentFor(color) : null;
  return (
    <Panel title={t.settings.branding}>
      <form
        onSubmit={submit(t.settings.branding, async () => {
          const r = await request(SetBranding, { logoUrl: logo.trim() || null, color: useColor ? color : null });
          applyBranding(r.setBranding);
        })}
      >
        <Text label={t.settings.logoUrl} value={logo} set={setLogo} type="url" required={false} />
        <label className="inline">
          <input type="checkbox" checked={useColor} onChange={(e) => setUseColor(e.target.checked)} />
          {t.settings.useColor}
        </label>
        {useColor ? (
          <>
            <Text label={t.settings.color} value={color} set={setColor} type="color" />
            {accent && accent !== color.toLowerCase() && (
              <p>
                <span className="swatch" style={{ background: accent }} aria-hidden="true" /> {t.settings.consoleAccent(accent)}
              </p>
            )}
          </>
        ) : (
          <p>{t.settings.noColor}</p>
        )}
        <button type="submit">{t.settings.saveBranding}</button>
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

/** Chargers: the meter set-up at boot (the readings billing needs, and a sampling interval where a charger has
 * none), and whether chargers nobody registered may join with the onboarding key, to wait for adoption. The key is
 * shown once, when made (saving with joining on and no key yet makes one). */
function Chargers({ data }: { data: SettingsResult }) {
  const [setUp, setSetUp] = useState(data.tenant.chargerMeterSetup);
  const [join, setJoin] = useState(data.tenant.acceptPendingChargers);
  // What the server holds: joining is sent only when changed, or a key when joining is on without one.
  const [joining, setJoining] = useState(data.tenant.acceptPendingChargers);
  const [hasKey, setHasKey] = useState(data.tenant.hasChargerOnboardingKey);
  const [key, setKey] = useState<string | null>(null);
  const [error, saved, submit] = useSubmit();
  const onboarding = async (acceptPending: boolean, newKey: boolean) => {
    const r = await request(SetChargerOnboarding, { acceptPending, newKey });
    setJoining(acceptPending);
    if (r.setChargerOnboarding) {
      setKey(r.setChargerOnboarding);
      setHasKey(true);
    }
  };
  const address = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ocpp/`;
  return (
    <Panel title={t.settings.chargers}>
      <form
        onSubmit={submit(t.settings.chargers, async () => {
          await request(SetChargerMeterSetup, { enabled: setUp });
          if (join !== joining || (join && !hasKey)) await onboarding(join, join && !hasKey);
        })}
      >
        <label className="inline">
          <input type="checkbox" checked={setUp} onChange={(e) => setSetUp(e.target.checked)} />
          {t.settings.meterSetup}
        </label>
        <label className="inline">
          <input type="checkbox" checked={join} onChange={(e) => setJoin(e.target.checked)} />
          {t.settings.acceptPending}
        </label>
        <p>{hasKey ? t.settings.keyExists : t.settings.noKey}</p>
        <button type="submit">{t.settings.saveChargers}</button>{' '}
        {joining && (
          // A new key for chargers to join with (it replaces the one before); shown while joining is on.
          <button type="button" onClick={submit(t.settings.onboardingKey, () => onboarding(true, true))}>
            {t.settings.newKey}
          </button>
        )}
        {key && (
          <p role="status">
            <span data-testid="onboarding-key">{t.settings.keyShown(key, address)}</span>{' '}
            <button type="button" onClick={() => setKey(null)}>{t.chargers.passwordNoted}</button>
          </p>
        )}
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}

/** The tenant's own Stripe keys: entered once, stored sealed on the server, shown only as a hint afterwards. */
function Payments() {
  const [account, setAccount] = useState<PaymentAccountResult['paymentAccount'] | undefined>(undefined);
  const [secretKey, setSecretKey] = useState('');
  const [publishableKey, setPublishableKey] = useState('');
  const [webhookSecret, setWebhookSecret] = useState('');
  const [error, saved, submit] = useSubmit();
  useEffect(() => {
    void request(PaymentAccount, {}).then((r) => setAccount(r.paymentAccount));
  }, []);
  if (account === undefined) return null;
  return (
    <Panel title={t.settings.payments}>
      {account ? (
        <>
          <p data-testid="payment-account">{t.settings.paymentsOwn(account.secretKeyHint, new Date(account.updatedAt).toLocaleString('en-GB'))}</p>
          <p>{account.webhookSecretSet ? t.settings.webhookAt(`${location.origin}${account.webhookPath}`) : t.settings.noWebhook}</p>
        </>
      ) : (
        <p>{t.settings.paymentsPlatform}</p>
      )}
      <form
        autoComplete="off"
        onSubmit={submit(t.settings.payments, async () => {
          const r = await request(SetPaymentAccount, {
            secretKey: secretKey.trim(),
            publishableKey: publishableKey.trim() || null,
            webhookSecret: webhookSecret.trim() || null,
          });
          setAccount(r.setPaymentAccount);
          // The secrets leave the page once stored.
          setSecretKey('');
          setWebhookSecret('');
        })}
      >
        <Text label={t.settings.secretKey} value={secretKey} set={setSecretKey} type="password" />
        <Text label={t.settings.publishableKey} value={publishableKey} set={setPublishableKey} required={false} />
        <Text label={t.settings.webhookSecret} value={webhookSecret} set={setWebhookSecret} type="password" required={false} />
        <button type="submit">{t.settings.savePayments}</button>
        {account && (
          <button
            type="button"
            onClick={submit(t.settings.payments, async () => {
              await request(RemovePaymentAccount, {});
              setAccount(null);
            })}
          >
            {t.settings.removePayments}
          </button>
        )}
        <Outcome error={error} saved={saved} />
      </form>
    </Panel>
  );
}
