// The chargers screen end to end in Debian's Chromium, run by the Rust test `console::in_chromium_…_charger…`, which
// drives the charge point (the `ocpp` package's, over the real OCPP endpoint) and answers on stdin:
//   → {"event":"start_clicked"}  ← {}   the charger took the remote start, started and metered 5 kWh
//   → {"event":"stop_clicked"}   ← {}   the charger took the remote stop and stopped
//   → {"event":"password_set","password":P}  ← {}   the charger was sent P and accepted it
//   → {"event":"onboarding_key","key":K}  ← {}   two new chargers (NEW_CHARGER, STRANGER) joined with K, pending
//   → {"event":"adopted","password":P}  ← {}   NEW_CHARGER was sent P, accepted it and booted accepted (STRANGER
//                                              was refused; the page then forgets it)
//   → {"event":"done"}
// Settings (environment): CONSOLE_URL, OWNER_EMAIL, OWNER_PASSWORD, STAFF_EMAIL, STAFF_PASSWORD, CHARGER, PATRON,
// NEW_CHARGER, STRANGER, FREE_STATION, PAUSED_STATION (one whose session is paused), SCREENSHOT_DIR, CHROMIUM.
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const base = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOT_DIR;
const WAIT = 30_000;
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const hear = async () => JSON.parse((await lines.next()).value);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.setDefaultTimeout(WAIT);
  await page.goto(`${base}/console/login`);
  await page.getByLabel('Email').fill(process.env.OWNER_EMAIL);
  await page.getByLabel('Password').fill(process.env.OWNER_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Live floor' }).waitFor();
  await page.getByRole('link', { name: 'Chargers' }).click();
  const card = page.locator('li.tile', { hasText: process.env.CHARGER });
  await card.getByText('Acme AC22 1.2.3 · OCPP 1.6').waitFor();
  await card.getByText('online', { exact: true }).first().waitFor();
  await card.getByText('Connector 2:').waitFor();

  // Remote start from the wallet of the site's patron.
  await card.getByRole('button', { name: 'Start charging' }).click();
  await card.getByLabel("Patron's wallet").first().check();
  await card.getByLabel('Find patron', { exact: true }).fill(process.env.PATRON);
  await card.getByRole('combobox', { name: "Patron's wallet" }).selectOption({ label: process.env.PATRON });
  await card.getByRole('button', { name: 'Start session' }).click();
  say({ event: 'start_clicked' });
  await hear();
  await card.getByText(/5\.00 kWh · charging$/).waitFor();
  await card.getByRole('button', { name: 'Stop charging' }).click();
  say({ event: 'stop_clicked' });
  await hear();
  await card.getByText(/5\.00 kWh · Remote$/).waitFor();
  await card.getByRole('button', { name: 'Start charging' }).waitFor();

  // A command and its answer.
  await card.getByRole('button', { name: 'Unlock connector 1' }).click();
  await card.getByRole('status').getByText('UnlockConnector: Unlocked', { exact: true }).waitFor();

  // The less frequent commands: a power limit, a reservation for the patron and its cancellation, each with the
  // charger's answer, and the call log.
  await card.getByText('More commands and the call log').click();
  await card.getByLabel('Power limit (kW)').fill('7.4');
  await card.getByRole('button', { name: 'Set power limit' }).click();
  await card.getByRole('status').getByText('SetChargingProfile: Accepted', { exact: true }).waitFor();
  await card.getByText('Power limit: 7.4 kW').waitFor();
  await card.getByLabel('Find patron to reserve for').fill(process.env.PATRON);
  await card.getByRole('combobox', { name: 'Reserve for' }).selectOption({ label: process.env.PATRON });
  await card.getByRole('button', { name: 'Reserve', exact: true }).click();
  const reserved = await card.getByRole('status').getByText(/^Reservation \d+: Accepted$/).textContent();
  const reservation = Number(/\d+/.exec(reserved)[0]);
  await card.getByRole('button', { name: `Cancel reservation ${reservation}` }).click();
  await card.getByRole('status').getByText('CancelReservation: Accepted', { exact: true }).waitFor();
  await card.getByTestId('calls').getByText(/ReserveNow: Accepted$/).waitFor();

  // A new password for the charger: shown once, sent to it, pending until the charger takes it.
  await card.getByRole('button', { name: 'New password' }).click();
  const shown = await card.getByTestId('new-password').textContent();
  const password = /^New password \(shown once\): (\S+) — sent to the charger;/.exec(shown)?.[1];
  if (!password) throw new Error(`the new password reads ${shown}`);
  await card.getByText('new password not yet confirmed by the charger').waitFor();
  say({ event: 'password_set', password });
  await hear();
  await card.getByTestId('calls').getByText(/ChangeConfiguration: Accepted$/).waitFor();
  await card.getByText('new password not yet confirmed by the charger').waitFor({ state: 'detached' });

  // Chargers nobody registered may join with the onboarding key (Settings), shown once.
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByLabel('Let chargers nobody registered join with the onboarding key', { exact: false }).check();
  await page.getByRole('button', { name: 'Save charger settings' }).click();
  await page.getByText('Chargers saved.').waitFor();
  const keyText = await page.getByTestId('onboarding-key').textContent();
  const key = /^Onboarding key \(shown once\): (\S+) — give a new charger the address wss?:\/\/[^/]+\/ocpp\/<its id>/.exec(keyText)?.[1];
  if (!key) throw new Error(`the onboarding key reads ${keyText}`);
  say({ event: 'onboarding_key', key });
  await hear();

  // Both wait under Chargers: one is refused, the other adopted onto the free station, its password shown once.
  await page.getByRole('link', { name: 'Chargers' }).click();
  const fresh = page.getByRole('region', { name: 'New chargers' });
  const stranger = fresh.locator('li.tile', { hasText: process.env.STRANGER });
  const newcomer = fresh.locator('li.tile', { hasText: process.env.NEW_CHARGER });
  await stranger.getByText('online', { exact: true }).waitFor();
  await newcomer.getByText('Wallbox').waitFor();
  await stranger.getByRole('button', { name: `Refuse ${process.env.STRANGER}`, exact: true }).click();
  await stranger.getByText('refused', { exact: true }).waitFor();
  const onto = newcomer.getByRole('combobox', { name: 'Adopt onto station' });
  // Offered: the station with no charger and no session; not the one whose session is paused.
  const offered = await onto.locator('option').allTextContents();
  if (!offered.includes(process.env.FREE_STATION) || offered.includes(process.env.PAUSED_STATION)) {
    throw new Error(`the stations offered are ${offered.join(', ')}`);
  }
  await onto.selectOption({ label: process.env.FREE_STATION });
  await newcomer.getByRole('button', { name: `Adopt ${process.env.NEW_CHARGER}`, exact: true }).click();
  const adoptedText = await page.getByTestId('adopted-password').textContent();
  const adopted = /Its own password \(shown once\): (\S+) — sent to the charger/.exec(adoptedText)?.[1];
  if (!adopted || !adoptedText.startsWith(`${process.env.NEW_CHARGER} is now ${process.env.FREE_STATION}.`)) {
    throw new Error(`the adoption reads ${adoptedText}`);
  }
  await newcomer.waitFor({ state: 'detached' });
  say({ event: 'adopted', password: adopted });
  await hear();
  // The refused one is forgotten: its identity is free again.
  await stranger.getByRole('button', { name: `Forget ${process.env.STRANGER}`, exact: true }).click();
  await stranger.waitFor({ state: 'detached' });
  const bay = page.locator('li.tile', { has: page.getByRole('heading', { name: process.env.FREE_STATION, exact: true }) });
  await bay.getByText('Acme Wallbox').waitFor();
  await bay.getByText('online', { exact: true }).first().waitFor();

  // Chargers are for owners and managers: a staff member's console has no chargers screen, even by its address
  // (the floor shows instead, where staff start and stop charging sessions).
  const staffContext = await browser.newContext({ viewport: { width: 1024, height: 1366 } });
  const staffPage = await staffContext.newPage();
  staffPage.setDefaultTimeout(WAIT);
  await staffPage.goto(`${base}/console/login`);
  await staffPage.getByLabel('Email').fill(process.env.STAFF_EMAIL);
  await staffPage.getByLabel('Password').fill(process.env.STAFF_PASSWORD);
  await staffPage.getByRole('button', { name: 'Sign in' }).click();
  await staffPage.getByRole('heading', { name: 'Live floor' }).waitFor();
  await staffPage.getByRole('link', { name: 'Shifts & tasks' }).waitFor();
  if ((await staffPage.getByRole('link', { name: 'Chargers' }).count()) !== 0) throw new Error('staff are offered the chargers screen');
  await staffPage.goto(`${base}/console/chargers`);
  await staffPage.getByRole('heading', { name: 'Live floor' }).waitFor();
  await staffContext.close();

  await page.evaluate(axeSource);
  const bad = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help}`);
  });
  if (bad.length) throw new Error(`accessibility (axe-core) on the chargers screen: ${bad.join('; ')}`);
  if (shots) {
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, 'chargers.png'), fullPage: true });
  }
  say({ event: 'done', reservation });
} catch (e) {
  if (shots) {
    mkdirSync(shots, { recursive: true });
    for (const context of browser.contexts()) {
      for (const p of context.pages()) await p.screenshot({ path: join(shots, 'chargers-failure.png'), fullPage: true }).catch(() => {});
    }
  }
  throw e;
} finally {
  await browser.close();
  process.stdin.destroy();
}
