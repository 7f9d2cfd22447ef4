// The console end to end in real Chromium (Debian's, driven by playwright-core), against a real API. Run by the Rust
// test `console::…` (tests/tests/api/console.rs), which starts the API, reads this script's JSON lines on stdout and
// answers on stdin:
//   → {"event":"owner_ready"}            the owner signed up, signed in and set up a venue, a station and a tariff
//   ← {"staff":{…},"other":{…},"venueId":…}  two staff logins (one of this venue, one of another) and the venue
//   → {"event":"figure",…}               measured figures
//   → {"event":"done"}
// Settings (environment): CONSOLE_URL, OWNER_ORG, OWNER_EMAIL, OWNER_PASSWORD, SCREENSHOT_DIR, CHROMIUM.
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const base = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOT_DIR;
const owner = { org: process.env.OWNER_ORG, email: process.env.OWNER_EMAIL, password: process.env.OWNER_PASSWORD };
/** How long any one expected change may take: generous, for a loaded machine. */
const WAIT = 30_000;

const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function hear() {
  const { value, done } = await lines.next();
  if (done) throw new Error('the test closed stdin');
  return JSON.parse(value);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

/** axe-core on the page as it is: any serious or critical violation fails, listed. */
async function accessible(page, screen) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')) }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `accessibility (axe-core) on the ${screen} screen: ${JSON.stringify(bad)}`);
  say({ event: 'accessible', screen, minor: result.length });
}

async function shot(page, name) {
  if (!shots) return;
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, email, password) {
  await page.goto(`${base}/console/login`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Live floor' }).waitFor({ timeout: WAIT });
}

const tile = (page, name) => page.locator('li.tile', { has: page.getByRole('heading', { name, exact: true }) });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const ownerContext = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ownerContext.newPage();
  page.setDefaultTimeout(WAIT);
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // Sign up and sign in.
  await page.goto(`${base}/console/signup`);
  await accessible(page, 'sign-up');
  await page.getByLabel('Business name').fill(owner.org);
  await page.getByLabel('Email').fill(owner.email);
  await page.getByLabel('Password').fill(owner.password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByText('Check your email for the code').waitFor();
  // The link in the verification email confirms the address (and leaves no token in the address bar).
  say({ event: 'signed_up' });
  const { verify } = await hear();
  await page.goto(`${base}${verify}`);
  await page.getByText('Your email address is confirmed.').waitFor();
  check(!/token/.test(page.url()), `the token stayed in the address bar: ${page.url()}`);
  await accessible(page, 'verify-email');
  await page.goto(`${base}/console/login`);
  await accessible(page, 'sign-in');
  await shot(page, 'sign-in');
  await signIn(page, owner.email, owner.password);
  await page.getByText('No venue yet').waitFor();
  // No token where a script or a URL would carry it.
  const stored = await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie, location.href]);
  check(stored[0] === 0 && stored[1] === 0 && stored[2] === '' && !/token/i.test(stored[3]), `tokens leaked: ${stored}`);

  // First-run set-up: venue, station, tariff with its live price preview.
  await page.getByRole('link', { name: 'Set-up' }).click();
  await page.getByLabel('Venue name').fill('Harbour Arcade');
  await page.getByLabel('Time zone').fill('Europe/Berlin');
  await page.getByLabel('Currency').fill('EUR');
  await page.getByLabel('Address').fill('Quay 1, Hamburg');
  await page.getByRole('button', { name: 'Create venue' }).click();
  await page.getByText('Venue saved.').waitFor();
  // Where patrons may check in.
  await page.getByLabel('Latitude (°)').fill('53.5413');
  await page.getByLabel('Longitude (°)').fill('9.9843');
  await page.getByLabel('Radius (metres)').fill('150');
  await page.getByRole('button', { name: 'Save check-in location' }).click();
  await page.getByText('Check-in location saved.').waitFor();
  await page.getByLabel('Station name').fill('PC-01');
  await page.getByLabel('Kind').selectOption('PC');
  await page.getByLabel('Control').selectOption('MANUAL');
  await page.getByRole('button', { name: 'Add station' }).click();
  await page.getByText('Station PC-01 saved.').waitFor();
  // A console on a Shelly plug: the control asks for what reaches the device.
  await page.getByLabel('Station name').fill('PS5-01');
  await page.getByLabel('Kind').selectOption('CONSOLE');
  await page.getByLabel('Control').selectOption('SHELLY');
  await page.getByLabel('Device address (host or IP on the venue network)').fill('10.0.0.7');
  await page.getByLabel('Shelly generation (1 or 2)').fill('2');
  await page.getByLabel('Patrons may start it themselves (app, QR code)').check();
  await page.getByRole('button', { name: 'Add station' }).click();
  await page.getByText('Station PS5-01 saved.').waitFor();
  // The stations here as they are: the manual PC can be reached, the plug cannot (no bridge yet). A third is added,
  // taken out of use and back, moved onto a Tasmota plug with a new name, and archived.
  const here = page.getByRole('region', { name: 'Stations here' });
  const stationRow = (name) => here.getByRole('listitem', { name, exact: true });
  const status = (name, text) => stationRow(name).getByTestId('station-status').filter({ hasText: text }).waitFor();
  await status('PC-01', /^online$/);
  await status('PS5-01', /^offline$/);
  const add = page.getByRole('region', { name: 'Station', exact: true });
  await add.getByLabel('Station name').fill('Karaoke 1');
  await add.getByLabel('Kind').selectOption('KARAOKE_ROOM');
  await add.getByLabel('Control').selectOption('MANUAL');
  await add.getByRole('button', { name: 'Add station' }).click();
  await page.getByText('Station Karaoke 1 saved.').waitFor();
  await status('Karaoke 1', /^online$/);
  await stationRow('Karaoke 1').getByRole('button', { name: 'Take out of use Karaoke 1', exact: true }).click();
  await status('Karaoke 1', /^out of use/);
  await stationRow('Karaoke 1').getByRole('button', { name: 'Back in use Karaoke 1', exact: true }).click();
  await status('Karaoke 1', /^online$/);
  await stationRow('Karaoke 1').getByRole('button', { name: 'Edit Karaoke 1', exact: true }).click();
  const edit = stationRow('Karaoke 1').getByRole('form', { name: 'Edit Karaoke 1' });
  await edit.getByLabel('Station name').fill('Karaoke A');
  await edit.getByLabel('Where in the venue (optional)').fill('Upstairs');
  await edit.getByLabel('Control').selectOption('TASMOTA');
  await edit.getByLabel('Tasmota MQTT topic').fill('karaoke-a');
  await edit.getByRole('button', { name: 'Save station' }).click();
  await stationRow('Karaoke A').getByText(/· tasmota · offline · Upstairs$/).waitFor();
  await stationRow('Karaoke A').getByRole('button', { name: 'Archive Karaoke A', exact: true }).click();
  // (With a station's edit form open and the archiving question asked.)
  await stationRow('PC-01').getByRole('button', { name: 'Edit PC-01', exact: true }).click();
  await accessible(page, 'set-up (editing a station, archiving one)');
  await stationRow('PC-01').getByRole('button', { name: 'Edit PC-01', exact: true }).click();
  await stationRow('Karaoke A').getByRole('button', { name: 'Archive Karaoke A now', exact: true }).click();
  await stationRow('Karaoke A').waitFor({ state: 'detached' });
  await page.getByLabel('Tariff name').fill('Evening');
  await page.getByLabel('Price per hour (EUR)').fill('60');
  await page.getByLabel('For a session of (Minutes)').fill('90');
  // 90 minutes at 60.00 an hour, priced by the server from the terms as typed.
  await page.getByTestId('preview-total').filter({ hasText: '€90.00' }).waitFor();
  await page.getByLabel('Free minutes').fill('30');
  await page.getByTestId('preview-total').filter({ hasText: '€60.00' }).waitFor();
  await page.getByLabel('Free minutes').fill('0');
  await page.getByTestId('preview-total').filter({ hasText: '€90.00' }).waitFor();
  await accessible(page, 'set-up');
  await shot(page, 'set-up');
  const prices = page.getByRole('region', { name: 'Prices here' });
  await prices.getByText('No tariff applies here yet: sessions cannot start until one does.').waitFor();
  await page.getByRole('button', { name: 'Create tariff and apply it' }).click();
  await page.getByText('Tariff saved.').waitFor();
  const price = (name) => prices.getByRole('listitem', { name, exact: true });
  await price('The whole venue: Evening').getByTestId('price-summary').filter({ hasText: /^€60\.00 an hour$/ }).waitFor();
  // Consoles cost more: a tariff of their own, for every console here (the most specific applies).
  await page.getByLabel('Tariff name').fill('Consoles');
  await page.getByLabel('Price per hour (EUR)').fill('90');
  await page.getByLabel('Free minutes').fill('10');
  await page.getByLabel('Applies to').selectOption({ label: 'Every console here' });
  await page.getByRole('button', { name: 'Create tariff and apply it' }).click();
  await price('Every console here: Consoles').getByTestId('price-summary').filter({ hasText: /^€90\.00 an hour, first 10 min free$/ }).waitFor();
  // The evening price goes up: a new version, edited in place.
  await price('The whole venue: Evening').getByRole('button', { name: 'Edit The whole venue: Evening', exact: true }).click();
  const editPrice = price('The whole venue: Evening').getByRole('form', { name: 'Edit The whole venue: Evening' });
  await editPrice.getByLabel('Price per hour (EUR)').fill('66');
  await editPrice.getByLabel('Most a patron pays a day (EUR; empty for no cap)').fill('40');
  await editPrice.getByRole('button', { name: 'Save tariff' }).click();
  await price('The whole venue: Evening').getByText('(version 2)').waitFor();
  await price('The whole venue: Evening').getByTestId('price-summary').filter({ hasText: /^€66\.00 an hour, at most €40\.00 a day$/ }).waitFor();
  // Someone else raises it and lifts the cap while it is being edited again: the save, made from version 2, is
  // refused; the row shows their version 3, the form keeps the price typed here and takes their cap (none), and
  // saving again makes it version 4.
  await price('The whole venue: Evening').getByRole('button', { name: 'Edit The whole venue: Evening', exact: true }).click();
  await editPrice.getByLabel('Price per hour (EUR)').fill('78');
  const elsewhere = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: owner.email, password: owner.password }),
  }).then((r) => r.json());
  const asOwner = (query, variables) =>
    fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${elsewhere.access_token}` },
      body: JSON.stringify({ query, variables }),
    }).then((r) => r.json());
  const evening = (await asOwner('{ tariffs { id name } }', {})).data?.tariffs?.find((x) => x.name === 'Evening');
  const raisedElsewhere = await asOwner('mutation($t: UUID!) { updateTariff(id: $t, terms: {currency: "EUR", perMinute: 120}) { version } }', { t: evening?.id });
  check(raisedElsewhere.data?.updateTariff?.version === 3, `the edit elsewhere: ${JSON.stringify(raisedElsewhere)}`);
  await editPrice.getByRole('button', { name: 'Save tariff' }).click();
  await editPrice.getByRole('alert').filter({ hasText: 'Someone changed this tariff while you were editing it' }).waitFor();
  await price('The whole venue: Evening').getByText('(version 3)').waitFor();
  await price('The whole venue: Evening').getByTestId('price-summary').filter({ hasText: /^€72\.00 an hour$/ }).waitFor();
  check((await editPrice.getByLabel('Price per hour (EUR)').inputValue()) === '78', 'the refused form kept what was typed');
  check((await editPrice.getByLabel('Most a patron pays a day (EUR; empty for no cap)').inputValue()) === '', 'the refused form took the cap lifted elsewhere');
  await editPrice.getByRole('button', { name: 'Save tariff' }).click();
  await price('The whole venue: Evening').getByText('(version 4)').waitFor();
  await price('The whole venue: Evening').getByTestId('price-summary').filter({ hasText: /^€78\.00 an hour$/ }).waitFor();
  // The venue's edge bridge: registered, and its install command with the token shown once.
  await page.getByLabel('Bridge name').fill('Front desk');
  await page.getByRole('button', { name: 'Register bridge' }).click();
  const command = await page.getByTestId('bridge-command').textContent();
  const token = /BRIDGE_TOKEN=(\S+) edge-bridge$/.exec(command ?? '')?.[1];
  check(token && command.startsWith('BRIDGE_CLOUD_URL=ws://') && command.includes('/edge/v1/tunnel'), `the install command reads ${command}`);
  await page.getByText('Front desk · offline').waitFor();

  // Settings: the billing tick, the staff cash cap, the legal details on documents and the chargers' meter set-up.
  await page.getByRole('link', { name: 'Settings' }).click();
  await page.getByLabel('Billing tick (seconds; empty for the default)').fill('15');
  await page.getByLabel('Most a staff member may top up in cash at once (EUR)').fill('150');
  await page.getByRole('button', { name: 'Save billing settings' }).click();
  await page.getByText('Billing saved.').waitFor();
  await page.getByLabel('Legal name').fill('Harbour Arcade GmbH');
  await page.getByLabel('Legal address').fill('Quay 1, 20457 Hamburg');
  await page.getByLabel('Tax id').fill('DE123456789');
  await page.getByRole('button', { name: 'Save legal details' }).click();
  await page.getByText('Legal details on receipts and invoices saved.').waitFor();
  await page.getByLabel(/^At each boot, set chargers up/).check();
  await page.getByRole('button', { name: 'Save charger settings' }).click();
  await page.getByText('Chargers saved.').waitFor();
  // Branding: a light brand colour is kept for emails but darkened for the console so white text on it stays
  // readable; the whole console takes the accent at once.
  // The logo's host is the tenant's own; here the browser is answered a 1×1 PNG instead of going out.
  await page.route('https://cdn.example.test/**', (route) =>
    route.fulfill({
      contentType: 'image/png',
      body: Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M/wHwAEBgIApD5fRAAAAABJRU5ErkJggg==', 'base64'),
    }),
  );
  await page.getByLabel('Logo address (https; empty for none)').fill('https://cdn.example.test/harbour.png');
  await page.getByLabel('Use an accent colour').check();
  await page.getByLabel('Accent colour', { exact: true }).fill('#ffd700');
  const shown = await page.getByText(/The console shows it as #[0-9a-f]{6}/).textContent();
  const accent = /#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})/.exec(shown);
  await page.getByRole('button', { name: 'Save branding' }).click();
  await page.getByText('Branding of emails and the console saved.').waitFor();
  const rgb = `rgb(${parseInt(accent[1], 16)}, ${parseInt(accent[2], 16)}, ${parseInt(accent[3], 16)})`;
  const background = await page.getByRole('button', { name: 'Save branding' }).evaluate((b) => getComputedStyle(b).backgroundColor);
  check(background === rgb, `the accent ${accent[0]} colours the buttons (${background})`);
  check(accent[0] !== '#ffd700', 'the light colour was darkened for the console');
  const logo = page.locator('header img.logo');
  await logo.waitFor();
  check((await logo.getAttribute('src')) === 'https://cdn.example.test/harbour.png', 'the header shows the saved logo');
  // The element is there before its image has loaded: wait for the load itself (bounded generously).
  const loaded = await logo
    .evaluate((img) => img.complete ? img.naturalWidth : new Promise((done) => {
      img.addEventListener('load', () => done(img.naturalWidth), { once: true });
      img.addEventListener('error', () => done(0), { once: true });
    }))
    .catch(() => 0);
  check(loaded === 1, `the logo loaded (natural width ${loaded})`);
  // The venue's own Stripe keys: stored, then shown only as a hint with the webhook address; the fields empty again.
  await page.getByLabel('Secret key (sk_live_… or a restricted rk_live_…)').fill('sk_test_harbourOwnKey1234');
  await page.getByLabel('Publishable key (pk_…, for your apps; optional)').fill('pk_test_harbour12345');
  await page.getByLabel('Webhook signing secret (whsec_…; empty keeps the stored one)').fill('whsec_harbour_secret_1');
  await page.getByRole('button', { name: 'Save payment keys' }).click();
  await page.getByTestId('payment-account').filter({ hasText: 'Your own Stripe account (sk_test_…1234)' }).waitFor();
  await page.getByText(/Point the account's Stripe webhook at http:\/\/.+\/webhooks\/stripe\/[0-9a-f-]{36}$/).waitFor();
  check((await page.getByLabel('Secret key (sk_live_… or a restricted rk_live_…)').inputValue()) === '', 'the secret key left the page');
  check(!(await page.content()).includes('harbourOwnKey'), 'the secret key is nowhere in the page');
  await accessible(page, 'settings');
  say({ event: 'bridge', token });
  say({ event: 'owner_ready' });
  const { staff, other, venueId, invitee } = await hear();

  // The floor: start a walk-in session from the tile; the clock and the cost tick.
  await page.getByRole('link', { name: 'Floor' }).click();
  const pc = tile(page, 'PC-01');
  await pc.getByRole('button', { name: 'Start' }).click();
  await pc.getByLabel('Walk-in (cash)').check();
  await pc.getByLabel('Minutes').fill('60');
  await pc.getByRole('button', { name: 'Start session' }).click();
  await pc.getByText('In use').waitFor();
  const cost = pc.locator('.cost output');
  const first = await cost.textContent();
  await cost.filter({ hasNotText: first }).waitFor();
  const later = await cost.textContent();
  say({ event: 'cost_ticked', from: first, to: later });
  await pc.locator('.remaining').filter({ hasText: /^(59|60):\d\d left$/ }).waitFor();
  await page.getByRole('status').filter({ hasText: 'Live' }).waitFor();
  await accessible(page, 'floor');
  await shot(page, 'floor');

  // Staff of the venue stop it in their own browser; the owner's tile changes without a reload.
  const staffContext = await browser.newContext({ viewport: { width: 1024, height: 1366 }, isMobile: false });
  const staffPage = await staffContext.newPage();
  staffPage.setDefaultTimeout(WAIT);
  await signIn(staffPage, staff.email, staff.password);
  const staffTile = tile(staffPage, 'PC-01');
  await staffTile.getByText('In use').waitFor();
  await shot(staffPage, 'floor-tablet');
  await staffTile.getByRole('button', { name: 'Stop' }).click();
  await staffTile.getByRole('button', { name: 'Start' }).waitFor();
  await pc.getByRole('button', { name: 'Start' }).waitFor();
  check((await pc.locator('.session').count()) === 0, 'the owner still sees a session on PC-01');

  // Staff of another venue do not see it.
  const otherContext = await browser.newContext();
  const otherPage = await otherContext.newPage();
  otherPage.setDefaultTimeout(WAIT);
  await signIn(otherPage, other.email, other.password);
  await tile(otherPage, 'Counter').waitFor();
  check((await tile(otherPage, 'PC-01').count()) === 0, 'staff of another venue see PC-01');
  check((await otherPage.locator('ul.tiles[aria-label="Harbour Arcade"]').count()) === 0, 'staff of another venue see Harbour Arcade');

  // An SOS raised through the API appears on the owner's screen.
  const login = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: staff.email, password: staff.password }),
  }).then((r) => r.json());
  const note = `Smoke at PC-01 ${Date.now()}`;
  const raisedAt = Date.now();
  const raised = await fetch(`${base}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${login.access_token}` },
    body: JSON.stringify({
      query: 'mutation($i: RaiseSosInput!) { raiseSos(input: $i) { id } }',
      variables: { i: { venueId, location: 'PC corner', severity: 'HIGH', note } },
    }),
  }).then((r) => r.json());
  check(raised.data?.raiseSos?.id, `raiseSos failed: ${JSON.stringify(raised)}`);
  const alert = page.getByRole('alert').filter({ hasText: note });
  await alert.waitFor();
  say({ event: 'figure', name: 'sos_to_screen_ms', value: Date.now() - raisedAt });
  await shot(page, 'sos');
  await alert.getByRole('button', { name: 'Acknowledge' }).click();
  await alert.getByText('(Acknowledged)').waitFor();
  await alert.getByRole('button', { name: 'Resolve' }).click();
  await alert.waitFor({ state: 'detached' });

  // The session in the history, with its cost lines.
  await page.getByRole('link', { name: 'Sessions' }).click();
  const row = page.getByRole('row').filter({ hasText: 'PC-01' }).filter({ hasText: 'ended' });
  await row.getByRole('button').click();
  await page.getByRole('heading', { name: 'Session: PC-01 (ended)' }).waitFor();
  const total = await page.getByTestId('session-total').textContent();
  check(/^€\d+\.\d\d$/.test(total ?? ''), `the session's total reads ${total}`);
  check(total === (await row.locator('td.num').textContent()), `the detail's total ${total} is not what the row charged`);
  // How it was paid and where the money went: the cash walk-in's wallet paid the venue's revenue.
  await page.getByTestId('session-paid-by').filter({ hasText: 'cash' }).waitFor();
  const money = page.getByTestId('session-money');
  await money.getByRole('row').filter({ hasText: 'patron wallet' }).filter({ hasText: `-${total}` }).waitFor();
  await money.getByRole('row').filter({ hasText: 'venue revenue' }).filter({ hasText: total }).waitFor();
  // Filters: the other venue has no session; nor has a period that starts tomorrow.
  await page.getByLabel('Venue').selectOption({ label: 'Second Venue' });
  await page.getByText('No sessions.').waitFor();
  await page.getByLabel('Venue').selectOption({ label: 'Harbour Arcade' });
  await row.waitFor();
  await page.getByLabel('Started on or after').fill(new Date(Date.now() + 86_400_000).toISOString().slice(0, 10));
  await page.getByText('No sessions.').waitFor();
  await page.getByLabel('Started on or after').fill('');
  await row.waitFor();
  await accessible(page, 'sessions');
  await shot(page, 'sessions');

  // A new patron, and cash taken at the venue into the wallet.
  await page.getByRole('link', { name: 'Patrons' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Mia Jones');
  await page.getByLabel('Email', { exact: true }).fill('mia@example.com');
  await page.getByRole('button', { name: 'Add patron' }).click();
  await page.getByRole('heading', { name: 'Mia Jones' }).waitFor();
  await page.getByTestId('wallet-balance').filter({ hasText: '€0.00' }).waitFor();
  await page.getByLabel('Amount (EUR)').fill('20');
  await page.getByRole('button', { name: 'Record cash top-up' }).click();
  await page.getByTestId('wallet-balance').filter({ hasText: '€20.00' }).waitFor();
  await page.getByRole('row').filter({ hasText: '€20.00' }).first().waitFor();
  // Her RFID card linked, and a flag with its reason (the test reads both back from the API).
  await page.getByLabel('Tag UID (as the reader shows it)').fill('04A1B2C3');
  await page.getByRole('button', { name: 'Link tag' }).click();
  await page.getByText('RFID tags: 04A1B2C3').waitFor();
  await page.getByLabel('Reason (staff see it when they start a session)').fill('Left without paying once');
  await page.getByRole('button', { name: 'Flag patron' }).click();
  await page.getByText('Flagged: Left without paying once').waitFor();
  await page.getByRole('button', { name: 'Remove the flag' }).waitFor();
  await accessible(page, 'patrons');
  await shot(page, 'patrons');

  // Staff: both members listed with their venue; a manager of this venue invited by email; the audit log.
  await page.getByRole('link', { name: 'Staff' }).click();
  await page.getByLabel(`Venues of ${staff.email}`).filter({ has: page.locator('option:checked', { hasText: 'Harbour Arcade' }) }).waitFor();
  await page.getByLabel(`Venues of ${other.email}`).filter({ has: page.locator('option:checked', { hasText: 'Second Venue' }) }).waitFor();
  const invite = page.getByRole('region', { name: 'Invite a member' });
  await invite.getByLabel('Email').fill(invitee);
  await invite.getByLabel('Role').selectOption('MANAGER');
  await invite.getByLabel('Venues').selectOption({ label: 'Harbour Arcade' });
  await invite.getByRole('button', { name: 'Send invitation' }).click();
  await page.getByText(`Invitation emailed to ${invitee}.`).waitFor();
  // The invitee opens the emailed link in a browser of its own and joins with a password it chooses.
  say({ event: 'invited' });
  const { accept } = await hear();
  const inviteePage = await (await browser.newContext()).newPage();
  inviteePage.setDefaultTimeout(WAIT);
  await inviteePage.goto(`${base}${accept}`);
  await inviteePage.getByRole('heading', { name: 'Join the team' }).waitFor();
  check(!/token/.test(inviteePage.url()), `the token stayed in the address bar: ${inviteePage.url()}`);
  await accessible(inviteePage, 'accept-invitation');
  await inviteePage.getByLabel('New password').fill('Manager-of-the-harbour-1');
  await inviteePage.getByRole('button', { name: 'Join' }).click();
  await inviteePage.getByText('You joined the team.').waitFor();
  await page.getByRole('cell', { name: 'member.invite' }).first().waitFor();
  // The audit log filtered to one action, then to one kind of object.
  const auditLog = page.getByTestId('audit-log');
  await page.getByLabel('Action (exact, e.g. member.invite)').fill('member.invite');
  await auditLog.getByRole('row').filter({ hasText: 'venue.create' }).first().waitFor({ state: 'detached' });
  const invites = await auditLog.locator('tbody tr').allTextContents();
  check(invites.length >= 1 && invites.every((r) => r.includes('member.invite')), `filtered to member.invite: ${invites.join(' | ')}`);
  await page.getByLabel('Action (exact, e.g. member.invite)').fill('');
  await page.getByLabel('Object').selectOption('tenant');
  await auditLog.getByRole('row').filter({ hasText: 'tenant.set_branding' }).first().waitFor();
  await auditLog.getByRole('row').filter({ hasText: 'member.invite' }).first().waitFor({ state: 'detached' });
  await accessible(page, 'staff');
  await shot(page, 'staff');

  // Shifts and tasks: the owner clocks in, gives the staff member a task; the staff member's screen shows it
  // (pushed) and marks it done; the owner's open list empties (pushed); clocking out counts the shift.
  await page.getByRole('link', { name: 'Shifts & tasks' }).click();
  await page.getByRole('button', { name: 'Clock in' }).click();
  await page.getByText(/On shift since .* at Harbour Arcade\./).waitFor();
  await page.getByTestId('on-shift').getByText(owner.email).waitFor();
  const newTask = page.getByRole('region', { name: 'New task' });
  await newTask.getByLabel('Venue').selectOption({ label: 'Harbour Arcade' });
  await newTask.getByLabel('Station').selectOption({ label: 'PC-01' });
  await newTask.getByLabel('Title').fill('Replace the PC-01 headset');
  await newTask.getByLabel('Assignee').selectOption({ label: staff.email.toLowerCase() }); // stored lower-cased
  await newTask.getByRole('button', { name: 'Create task' }).click();
  const ownerTask = page.getByRole('listitem', { name: 'Replace the PC-01 headset' });
  await ownerTask.waitFor();
  await staffPage.getByRole('link', { name: 'Shifts & tasks' }).click();
  const staffTask = staffPage.getByRole('listitem', { name: 'Replace the PC-01 headset' });
  await staffTask.getByText('PC-01').waitFor();
  await accessible(staffPage, 'work (staff)');
  await staffTask.getByRole('button', { name: 'Done' }).click();
  await ownerTask.waitFor({ state: 'detached' });
  await page.getByLabel('State').selectOption('DONE');
  await ownerTask.waitFor();
  await accessible(page, 'work');
  await shot(page, 'work');
  await page.getByRole('button', { name: 'Clock out' }).click();
  await page.getByText('Nobody is on shift.').waitFor();
  await page.getByTestId('hours').getByRole('row').filter({ hasText: owner.email }).getByRole('cell', { name: '1', exact: true }).waitFor();

  // Reports: once the workers' pass has rolled the day up, its session and revenue; the sessions as CSV.
  say({ event: 'roll_up' });
  await hear();
  await page.getByRole('link', { name: 'Reports' }).click();
  await page.getByLabel('To').fill(new Date(Date.now() + 2 * 86_400_000).toISOString().slice(0, 10));
  await page.getByTestId('sessions-count').filter({ hasText: /^1$/ }).waitFor();
  check((await page.locator('svg.chart rect').count()) >= 1, 'no revenue bar');
  // The day's row, and the walk-in's cash as its payment method.
  // (The tenant is new, so the projection has no past weeks to learn from, and nobody owes anything.)
  await page.getByTestId('daily').getByRole('cell', { name: '1', exact: true }).first().waitFor();
  await page.getByRole('row').filter({ hasText: /^cash€\d+\.\d\d$/ }).waitFor();
  await page.getByText('No revenue in those days yet, so nothing to project from.').waitFor();
  await page.getByText('Nobody owes anything.').waitFor();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Sessions (CSV)' }).click()]);
  const csv = await (await download.createReadStream()).toArray().then((chunks) => Buffer.concat(chunks).toString('utf8'));
  check(csv.split('\n').filter((l) => l.trim()).length >= 2, `the sessions CSV holds no session: ${csv}`);
  say({ event: 'csv', name: download.suggestedFilename(), lines: csv.split('\n').filter((l) => l.trim()).length });
  await accessible(page, 'reports');
  await shot(page, 'reports');

  // Signing out everywhere ends the staff's browser sign-in too: its next refresh is refused.
  await staffPage.getByRole('button', { name: 'Sign out everywhere' }).click();
  await staffPage.getByRole('heading', { name: 'Sign in' }).waitFor();
  const refreshed = await staffPage.evaluate(() =>
    fetch('/api/v1/auth/refresh', { method: 'POST', headers: { 'content-type': 'application/json', 'x-switchyard-refresh': 'cookie' }, body: '{}' }).then((r) => r.status),
  );
  check(refreshed === 401, `a refresh after signing out everywhere answered ${refreshed}`);

  check(consoleErrors.length === 0, `errors in the owner's page: ${consoleErrors.join('; ')}`);
  say({ event: 'done' });
} catch (e) {
  // What each page showed when it failed, for whoever reads the log.
  if (shots) {
    mkdirSync(shots, { recursive: true });
    let i = 0;
    for (const context of browser.contexts()) {
      for (const p of context.pages()) {
        await p.screenshot({ path: join(shots, `failure-${i++}.png`), fullPage: true }).catch(() => {});
      }
    }
  }
  throw e;
} finally {
  await browser.close();
  process.stdin.destroy();
}
