// End-to-end test of the dashboard in real headless Chromium (Debian's, driven
// by playwright-core), against a live `cohort run` started by browser_e2e.sh.
// Environment:
//   COHORT_URL        http://127.0.0.1:PORT   (the embedded head)
//   COHORT_TOKEN      the API token `cohort run` printed
//   COHORT_JOB_ID     the training job
//   PLAYWRIGHT_DIR    where tools/browser/ensure.sh installed playwright-core
//   SCREENSHOT_DIR    where dashboard-job.png and dashboard-overview.png go
//   COHORT_CHROMIUM   the browser (default /usr/bin/chromium)
//   COHORT_E2E_GO_FILE  created once the job page has read the log: the
//                     wrapper's workers wait for it before they train
//   COHORT_E2E_END_FILE created at the end: the workers wait for it before
//                     they exit (the embedded cluster ends with the job)
//   COHORT_E2E_MIN_POINTS  loss points to wait for before the screenshot (default 2)
// Checks: nothing is shown without the token and a wrong one is refused; the
// overview lists the node; the jobs table lists the job; the job page's loss
// chart gets >= COHORT_E2E_MIN_POINTS points while the job runs; the log tail follows
// over the WebSocket (cookie auth) and grows between two reads; the rank
// filter keeps only that rank's lines; no console errors (CSP included).
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const url = env('COHORT_URL');
const token = env('COHORT_TOKEN');
const jobId = env('COHORT_JOB_ID');
const shots = env('SCREENSHOT_DIR');
const minPoints = Number(env('COHORT_E2E_MIN_POINTS', '2'));
const require = createRequire(join(env('PLAYWRIGHT_DIR'), 'node_modules', 'x.js'));
const { chromium } = require('playwright-core');

const t0 = Date.now();
const log = (msg) => console.log(`[browser_e2e +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
function check(cond, msg) {
  if (!cond) throw new Error('check failed: ' + msg);
  log('ok: ' + msg);
}

mkdirSync(shots, { recursive: true });
// Playwright starts the browser with a fresh, empty profile (--user-data-dir
// in a temp dir) and --no-sandbox (chromiumSandbox: false); the rest keeps
// Chromium off the network it cannot reach here.
const browser = await chromium.launch({
  executablePath: env('COHORT_CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  chromiumSandbox: false,
  args: ['--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  timeout: 30000,
});
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push('pageerror: ' + e.message));
  page.setDefaultTimeout(20000);

  // 1. No token: only the prompt, nothing of the cluster.
  await page.goto(url + '/');
  await page.locator('#login-token').waitFor({ state: 'visible' });
  check((await page.locator('#app').innerText()).trim() === '', 'nothing is shown before the token is given');
  await page.fill('#login-token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.locator('#login-error', { hasText: 'refused' }).waitFor();
  check(true, 'a wrong token is refused');
  errors.length = 0; // Chromium logs that refused request (401) as an error: expected

  // 2. The token: overview with the embedded node.
  await page.fill('#login-token', token);
  await page.click('#login-form button[type=submit]');
  await page.locator('#login').waitFor({ state: 'hidden' });
  await page.locator('main table .badge-alive').first().waitFor();
  check(await page.evaluate(() => localStorage.getItem('cohort_token') !== null), 'the token is kept in localStorage');
  check(true, 'the overview lists an ALIVE node');

  // 3. Jobs table, then the job's page by clicking its row.
  await page.click('nav a[href="#/jobs"]');
  const row = page.locator('main tbody tr', { hasText: jobId });
  await row.waitFor();
  check(true, 'the jobs table lists ' + jobId);
  await row.locator('a').first().click();
  await page.waitForURL((u) => u.hash === '#/jobs/' + jobId);

  // 4. Live log over the WebSocket (the cookie from POST /api/authenticate).
  await page.waitForFunction(() => window.__cohort.log && window.__cohort.log.lines.length > 0, null, { timeout: 60000 });
  const state = await page.locator('.log-state').innerText();
  check(state === 'live' || state === 'complete', `the log tail came over the WebSocket (state "${state}")`);
  const firstRead = await page.evaluate(() => window.__cohort.log.text().length);
  // From now on, note how many loss points the chart shows, every 50 ms.
  await page.evaluate(() => {
    window.__e2eSeen = [];
    setInterval(() => {
      const n = window.__cohort.chartPoints ? window.__cohort.chartPoints('loss').first : 0;
      if (window.__e2eSeen[window.__e2eSeen.length - 1] !== n) window.__e2eSeen.push(n);
    }, 50);
  });
  if (process.env.COHORT_E2E_GO_FILE) {
    writeFileSync(process.env.COHORT_E2E_GO_FILE, '');
    log('the page is following the job: the workers may train now');
  }
  await page.waitForFunction((n) => window.__cohort.log.text().length > n, firstRead, { timeout: 60000 });
  const secondRead = await page.evaluate(() => window.__cohort.log.text().length);
  check(secondRead > firstRead, `the log tail grew without a reload (${firstRead} -> ${secondRead} chars)`);
  await page.locator('#log', { hasText: '[rank 0] epoch=' }).waitFor({ timeout: 60000 });
  check(true, 'the log shows the epochs rank 0 prints');

  // 5. The loss chart: at least minPoints points while the job runs.
  await page.waitForFunction((n) => window.__cohort.chartPoints && window.__cohort.chartPoints('loss').first >= n,
    minPoints, { timeout: 90000 });
  const pts = await page.evaluate(() => window.__cohort.chartPoints('loss'));
  check(pts.first >= minPoints, `the loss chart has ${pts.first} points`);
  const lossData = await page.evaluate(() => window.__cohort.charts.loss.plot.data);
  const series = lossData[1].filter((v) => v !== null);
  check(series[series.length - 1] < series[0], `the loss falls (${series[0].toFixed(3)} -> ${series[series.length - 1].toFixed(3)})`);
  check(await page.locator('[data-chart=loss] canvas').count() > 0, 'the chart is drawn on a canvas');
  check(await page.locator('[data-chart=accuracy] canvas').count() > 0, 'an accuracy chart is drawn');
  check(await page.locator('[data-chart=throughput] canvas').count() > 0, 'a samples/s chart is drawn');
  // The workers started training only after the page was open (the go file):
  // so the points came into the open page, without a reload.
  const seen = await page.evaluate(() => {
    const now = window.__cohort.chartPoints('loss').first;
    const s = window.__e2eSeen.slice();
    if (s[s.length - 1] !== now) s.push(now);
    return s;
  });
  check(seen[0] === 0 && seen[seen.length - 1] >= minPoints,
    `the chart filled in live (loss points seen: ${seen.join(' -> ')})`);

  // 6. Per-rank status and the mean toggle.
  const workerRows = await page.locator('section:has(h2:text("Workers")) tbody tr').count();
  check(workerRows === 2, 'two workers are listed');
  await page.selectOption('select[aria-label="series"]', 'rank');
  const perRank = await page.evaluate(() => window.__cohort.charts.loss.plot.series.length - 1);
  await page.selectOption('select[aria-label="series"]', 'mean');
  const mean = await page.evaluate(() => window.__cohort.charts.loss.plot.series.length - 1);
  check(mean * 2 === perRank, `one line per rank: ${perRank} series; mean of the ranks: ${mean}`);

  // 7. Rank filter on the "[rank R]" prefix.
  // (The seed model prints from rank 0 only; the job's own lines have no prefix.)
  check((await page.locator('#log').innerText()).includes('cohort: running entrypoint'), 'all ranks: the job\'s own lines too');
  check(await page.locator('select[aria-label="rank filter"] option[value="1"]').count() === 1, 'rank 1 is offered in the filter');
  await page.selectOption('select[aria-label="rank filter"]', '0');
  const only0 = (await page.locator('#log').innerText()).split('\n').filter((l) => l.trim());
  check(only0.length > 0 && only0.every((l) => l.startsWith('[rank 0]')), `rank filter: ${only0.length} lines, all [rank 0]`);
  await page.selectOption('select[aria-label="rank filter"]', '1');
  check((await page.locator('#log').innerText()).trim() === '', 'rank 1 printed nothing');
  await page.selectOption('select[aria-label="rank filter"]', 'all');

  // 7b. Without WebSockets (a proxy that drops upgrades): the page polls GET /logs.
  const noWs = await context.newPage();
  await noWs.addInitScript(() => {
    window.WebSocket = function NoWebSocket() {
      throw new Error('WebSocket disabled by the test');
    };
  });
  await noWs.goto(url + '/#/jobs/' + encodeURIComponent(jobId));
  await noWs.waitForFunction(() => window.__cohort.log && window.__cohort.log.lines.length > 0, null, { timeout: 30000 });
  const polled = await noWs.locator('.log-state').innerText();
  check(polled === 'polling' || polled === 'complete', `without WebSockets the log is polled (state "${polled}")`);
  check((await noWs.locator('#log').innerText()).includes('[rank 0]'), 'the polled log has the rank lines');
  await noWs.close();

  // 8. Screenshots: the job page, then the overview.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, 'dashboard-job.png'), fullPage: true });
  log('saved ' + join(shots, 'dashboard-job.png'));
  await page.click('nav a[href="#/"]');
  await page.locator('main table .badge-alive').first().waitFor();
  await page.locator('.events li').first().waitFor();
  await page.screenshot({ path: join(shots, 'dashboard-overview.png'), fullPage: true });
  log('saved ' + join(shots, 'dashboard-overview.png'));

  // 9. Jobs table: status filter, Stop and Delete (each with a confirm) on a
  // second job that only sleeps.
  const submitted = await page.request.post(url + '/api/jobs/', {
    headers: { Authorization: 'Bearer ' + token },
    data: { entrypoint: 'sleep 600', submission_id: 'e2e-sleeper' },
  });
  check(submitted.ok(), 'submitted a second job (sleep 600)');
  await page.click('nav a[href="#/jobs"]');
  await page.selectOption('select[aria-label="status filter"]', 'RUNNING');
  const sleeper = page.locator('main tbody tr', { hasText: 'e2e-sleeper' });
  await sleeper.waitFor();
  const shownStatuses = await page.locator('main tbody .badge').allInnerTexts();
  check(shownStatuses.length >= 2 && shownStatuses.every((t) => t === 'RUNNING'),
    `the RUNNING filter shows only running jobs (${shownStatuses.join(', ')})`);
  const dialogs = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.accept();
  });
  await sleeper.locator('button', { hasText: 'Stop' }).click();
  await page.selectOption('select[aria-label="status filter"]', 'ALL');
  await sleeper.locator('.badge-stopped').waitFor({ timeout: 30000 });
  check(true, 'Stop stopped the job');
  await sleeper.locator('button', { hasText: 'Delete' }).click();
  await sleeper.waitFor({ state: 'detached', timeout: 10000 });
  check(dialogs.length === 2 && dialogs[0].startsWith('Stop job e2e-sleeper') && dialogs[1].startsWith('Delete job e2e-sleeper'),
    'Stop and Delete asked for confirmation');
  const gone = await page.request.get(url + '/api/jobs/e2e-sleeper', { headers: { Authorization: 'Bearer ' + token } });
  check(gone.status() === 404, 'Delete removed the job');

  // 10. A token that stops working (a new head, a rotated token): a 401
  // brings the prompt back, and nothing else is shown.
  await page.evaluate(() => localStorage.setItem('cohort_token', 'stale-token'));
  errors.length = 0;
  await page.reload();
  await page.locator('#login-error', { hasText: 'refused' }).waitFor();
  check((await page.locator('#app').innerText()).trim() === '', 'a refused stored token brings the prompt back');
  errors.length = 0; // the refused request (401), as in step 1

  const bad = errors;
  check(bad.length === 0, 'no console errors' + (bad.length ? ': ' + bad.join(' | ') : ''));
} finally {
  await browser.close();
  if (process.env.COHORT_E2E_END_FILE) writeFileSync(process.env.COHORT_E2E_END_FILE, '');
}
log('PASSED');
