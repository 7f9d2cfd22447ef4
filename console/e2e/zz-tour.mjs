import { chromium } from 'playwright-core';
const base = 'http://127.0.0.1:8080/console/';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const errors = [];
page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errors.push(`${m.type()}: ${m.text()}`); });
page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
await page.goto(base);
await page.getByLabel('Email').fill(process.env.EMAIL || 'owner@demo.switchyard.test');
await page.getByLabel('Password').fill(process.env.PASSWORD || 'Neon-Arcade-42');
await page.getByRole('button', { name: 'Sign in' }).click();
await page.waitForTimeout(2000);
const links = await page.getByRole('navigation').getByRole('link').allTextContents();
console.log('nav:', links.join(' | '));
const dir = process.env.OUT || '/tmp/tour';
let i = 0;
for (const name of links) {
  await page.getByRole('navigation').getByRole('link', { name, exact: true }).click();
  await page.waitForTimeout(1500);
  await page.screenshot({ path: `${dir}/${String(i++).padStart(2, '0')}-${name.replace(/\W+/g, '_')}.png`, fullPage: true });
}
console.log(errors.join('\n'));
await browser.close();
