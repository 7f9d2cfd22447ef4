// The rentals screen end to end in Debian's Chromium, run by the Rust test `console::in_chromium_…_powerbank…`,
// which set up two manual cabinets (A with pb-001 and pb-002, B with one empty slot), a powerbank tariff (0.60 an
// hour after 5 free minutes, deposit 5.00) and a patron with cash in the wallet. Prints {"event":"done"} at the end.
// Settings (environment): CONSOLE_URL, OWNER_EMAIL, OWNER_PASSWORD, PATRON, SCREENSHOT_DIR, CHROMIUM.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const base = process.env.CONSOLE_URL;
const shots = process.env.SCREENSHOT_DIR;
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
const check = (ok, what) => {
  if (!ok) throw new Error(`check failed: ${what}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.setDefaultTimeout(30_000);
  await page.goto(`${base}/console/login`);
  await page.getByLabel('Email').fill(process.env.OWNER_EMAIL);
  await page.getByLabel('Password').fill(process.env.OWNER_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Live floor' }).waitFor();
  await page.getByRole('link', { name: 'Rentals' }).click();

  // The cabinets with what is docked; a new powerbank docked in B's free slot.
  const a = page.getByRole('listitem', { name: 'Cabinet A' });
  const b = page.getByRole('listitem', { name: 'Cabinet B' });
  await a.getByText('Slot 1: pb-001').waitFor();
  await a.getByText('Slot 2: pb-002').waitFor();
  await b.getByText('Slot 1: empty').waitFor();
  await b.getByLabel('Powerbank label').fill('pb-003');
  await b.getByRole('button', { name: 'Dock powerbank' }).click();
  await b.getByText('Slot 1: pb-003').waitFor();

  // A rental for the patron from cabinet A: the quote first, then the start.
  const rent = page.getByRole('region', { name: 'Rent a powerbank' });
  await rent.getByLabel('Find patron').fill(process.env.PATRON);
  await rent.getByRole('combobox', { name: 'Patron' }).selectOption({ label: process.env.PATRON });
  await rent.getByLabel('Cabinet').selectOption({ label: 'Cabinet A' });
  await rent.getByRole('button', { name: 'Get a price' }).click();
  const quote = await rent.getByTestId('quote').textContent();
  check(quote === '€0.60 an hour after 5 free minutes; deposit €5.00, released on return.', `the quote reads ${quote}`);
  await rent.getByRole('button', { name: 'Start rental' }).click();
  const row = page.getByTestId('rentals').getByRole('row').filter({ hasText: process.env.PATRON });
  await row.waitFor();
  const label = await row.locator('td').nth(1).textContent();
  check(/^pb-00[12]$/.test(label ?? ''), `the rental took ${label}`);
  await a.getByText(`Slot 1: ${label === 'pb-001' ? 'empty' : 'pb-001'}`).waitFor();

  await page.evaluate(axeSource);
  const bad = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id}: ${v.help}`);
  });
  check(bad.length === 0, `rentals: ${bad.join('; ')}`);
  if (shots) await page.screenshot({ path: join(shots, 'rentals.png'), fullPage: true });

  // Returned to cabinet A within the free minutes: nothing charged, the deposit released.
  await row.getByRole('combobox').selectOption({ label: 'Cabinet A' });
  await row.getByRole('button', { name: `Return ${label}` }).click();
  await page.getByText(`${label} returned to Cabinet A; €0.00 charged.`).waitFor();
  await page.getByText('No rental is running.').waitFor();
  say({ event: 'done', label });
} finally {
  await browser.close();
}
