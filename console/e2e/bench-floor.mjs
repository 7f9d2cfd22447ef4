// The live floor's figures in Debian's Chromium (run by `./infra/dev.sh bench console`, through bench-console, which
// sets up the venue and passes CONSOLE_URL, OWNER_EMAIL, OWNER_PASSWORD, STATIONS, RATE, SECONDS, SESSIONS).
//   render: from a reload to every tile drawn (the sign-in refresh, the bundle, the subscription's first snapshot).
//   lag:    while RATE session changes a second arrive (pauses and resumes, round the sessions), once a second one marker
//           session is paused or resumed; the time from that change's answer to its tile showing it.
import { chromium } from 'playwright-core';

const base = process.env.CONSOLE_URL;
const stations = Number(process.env.STATIONS);
const rate = Number(process.env.RATE);
const seconds = Number(process.env.SECONDS);
const sessions = process.env.SESSIONS.split(',');
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const max = (xs) => Math.max(...xs);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1920, height: 1080 } })).newPage();
  page.setDefaultTimeout(60_000);
  await page.goto(`${base}/console/login`);
  await page.getByLabel('Email').fill(process.env.OWNER_EMAIL);
  await page.getByLabel('Password').fill(process.env.OWNER_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const last = page.locator('li.tile').nth(stations - 1);
  await last.waitFor();

  const renders = [];
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    await page.reload();
    await last.waitFor();
    renders.push(Date.now() - t0);
  }
  console.log(`render of ${stations} tiles after a reload: median ${median(renders)} ms, worst ${max(renders)} ms (${renders.join(', ')})`);

  const login = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: process.env.OWNER_EMAIL, password: process.env.OWNER_PASSWORD }),
  }).then((r) => r.json());
  const gql = (query, variables) =>
    fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${login.access_token}` },
      body: JSON.stringify({ query, variables }),
    }).then(async (r) => {
      const body = await r.json();
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body;
    });
  const marker = sessions[0];
  const markerTile = page.locator('li.tile').first();
  const lags = [];
  let sent = 0;
  const storm = (async () => {
    const start = Date.now();
    while (Date.now() - start < seconds * 1000) {
      const due = start + (sent * 1000) / rate;
      if (Date.now() < due) await new Promise((r) => setTimeout(r, due - Date.now()));
      // Each other session in turn is paused, and on the next round resumed.
      const others = sessions.length - 1;
      const id = sessions[1 + (sent % others)];
      const op = Math.floor(sent / others) % 2 === 0 ? 'pauseSession' : 'resumeSession';
      sent++;
      void gql(`mutation($id: UUID!) { ${op}(id: $id) { id } }`, { id });
    }
  })();
  for (let i = 0; i < seconds; i++) {
    const pause = i % 2 === 0;
    await gql(`mutation($id: UUID!) { ${pause ? 'pauseSession' : 'resumeSession'}(id: $id) { id } }`, { id: marker });
    const t0 = Date.now();
    await markerTile.getByText(pause ? 'Paused' : 'In use', { exact: true }).waitFor();
    lags.push(Date.now() - t0);
    await new Promise((r) => setTimeout(r, 1000 - Math.min(1000, Date.now() - t0)));
  }
  await storm;
  console.log(
    `under ${rate} changes/s for ${seconds} s (${sent} sent): a change on screen after median ${median(lags)} ms, worst ${max(lags)} ms (${lags.join(', ')})`,
  );
} finally {
  await browser.close();
}
