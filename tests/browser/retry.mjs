// The status page in a real browser: log in with a token, look at the overview and the
// error dashboard, open a failed exchange, press Retry, and reload until it has succeeded.
//
//   OBMEN_TOKEN=<admin token> node retry.mjs <base url> <failed exchange id>
//
// The base URL and the id may also come from OBMEN_URL and OBMEN_EXCHANGE. The token is read
// from the environment only (argv is visible to every user of the machine). With
// OBMEN_SCREENSHOTS=<dir>, full-page screenshots are saved there: overview.png, errors.png,
// exchange.png (the detail page after the retry: the refused attempt, the manual action and
// the successful attempt), and failure.png when a check fails. Chromium is the system one
// (OBMEN_CHROMIUM, default /usr/bin/chromium); no browser is ever downloaded. Exits 0 when
// every check passed, 1 with the reason otherwise.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.OBMEN_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-quic',
  '--disable-sync',
  '--no-proxy-server',
];
/** How long the retried exchange may take to succeed. */
const SUCCEED_WITHIN_MS = 20_000;
/** Each navigation or element wait. */
const STEP_TIMEOUT_MS = 15_000;
/** The whole run; a hang ends the process rather than the CI job. */
const RUN_TIMEOUT_MS = 90_000;

class Check extends Error {}

function fail(message) {
  throw new Check(message);
}

function log(message) {
  console.log(`retry.mjs: ${message}`);
}

function usage() {
  return 'usage: OBMEN_TOKEN=<admin token> node retry.mjs <base url> <failed exchange id> '
    + '(or OBMEN_URL / OBMEN_EXCHANGE); OBMEN_SCREENSHOTS=<dir> saves screenshots';
}

function settings() {
  const base = (process.argv[2] || process.env.OBMEN_URL || '').replace(/\/+$/, '');
  const id = process.argv[3] || process.env.OBMEN_EXCHANGE || '';
  const token = process.env.OBMEN_TOKEN || '';
  if (!/^https?:\/\/[^/]+$/.test(base)) fail(`no base URL like http://127.0.0.1:8080 (got "${base}"); ${usage()}`);
  if (!/^\d+$/.test(id)) fail(`no exchange id (a number; got "${id}"); ${usage()}`);
  if (!token) fail(`OBMEN_TOKEN is not set; ${usage()}`);
  const shots = process.env.OBMEN_SCREENSHOTS || '';
  return { base, id, token, shots: shots ? path.resolve(shots) : null };
}

/** A page answered: 2xx, not the login page, with the expected title. */
async function expectPage(page, response, what, { title, path: wantPath }) {
  if (!response) fail(`${what}: no response`);
  const status = response.status();
  const url = new URL(page.url());
  if (status >= 400) {
    const text = (await page.locator('main').innerText().catch(() => '')).trim();
    fail(`${what}: HTTP ${status} at ${url.pathname}: ${text.replace(/\s+/g, ' ').slice(0, 300)}`);
  }
  if (url.pathname === '/login' && wantPath !== '/login') fail(`${what}: sent to the login page (the session was not accepted)`);
  if (wantPath && url.pathname !== wantPath) fail(`${what}: landed on ${url.pathname}, expected ${wantPath}`);
  const h1 = (await page.locator('main h1').first().innerText()).trim();
  if (title && !h1.includes(title)) fail(`${what}: the heading is "${h1}", expected "${title}"`);
}

async function screenshot(page, shots, name) {
  if (!shots) return;
  const file = path.join(shots, name);
  await page.screenshot({ path: file, fullPage: true });
  log(`saved ${file}`);
}

/** The status badge of the exchange on its detail page, and its attempt count. */
async function exchangeState(page) {
  const state = await page.evaluate(() => {
    const summary = document.querySelector('dl.summary');
    const badge = summary?.querySelector('.badge')?.textContent?.trim() ?? null;
    const dt = [...(summary?.querySelectorAll('dt') ?? [])].find((d) => d.textContent.trim() === 'Attempts');
    return { badge, attempts: dt?.nextElementSibling?.textContent?.trim() ?? null };
  });
  if (state.badge === null) fail('the detail page has no status badge in its summary');
  const attempts = Number(state.attempts);
  if (!Number.isInteger(attempts)) fail(`the detail page shows no attempt count (got "${state.attempts}")`);
  return { badge: state.badge, attempts };
}

async function run(cfg, page, context) {
  const { base, id, token, shots } = cfg;

  // Log in: the form takes the token and sets an HttpOnly session cookie.
  let response = await page.goto(`${base}/login`);
  await expectPage(page, response, 'the login page', { title: 'Log in', path: '/login' });
  await page.locator('form.login input[name="token"]').fill(token);
  [response] = await Promise.all([
    page.waitForNavigation(),
    page.locator('form.login button[type="submit"]').click(),
  ]);
  await expectPage(page, response, 'after logging in', { title: 'Overview', path: '/' });
  const cookies = await context.cookies(base);
  const session = cookies.find((c) => c.name === 'obmen_session');
  if (!session) {
    fail(`no obmen_session cookie after logging in (cookies: ${cookies.map((c) => c.name).join(', ') || 'none'})`);
  }
  if (!session.httpOnly) fail('the session cookie is not HttpOnly');
  if (session.sameSite !== 'Strict') fail(`the session cookie is SameSite=${session.sameSite}, expected Strict`);
  if ((await page.evaluate(() => document.cookie)).includes('obmen_session')) fail('page script can read the session cookie');
  log('logged in');

  // The overview: one row per flow.
  const flows = page.locator('table.flows tbody tr');
  const rows = await flows.count();
  if (rows === 0) fail('the overview shows no flows table rows');
  const names = (await page.locator('table.flows tbody td.name').allInnerTexts()).map((s) => s.trim());
  log(`overview: ${rows} flow(s): ${names.join(', ')}`);
  await screenshot(page, shots, 'overview.png');

  // The error dashboard, through the navigation bar.
  [response] = await Promise.all([
    page.waitForNavigation(),
    page.locator('header.top nav a[href="/errors"]').click(),
  ]);
  await expectPage(page, response, 'the errors page', { title: 'Errors', path: '/errors' });
  const groups = await page.locator('table.errors tbody tr').count();
  if (groups === 0) fail('the errors page shows no error groups although an exchange failed');
  log(`errors: ${groups} group(s)`);
  await screenshot(page, shots, 'errors.png');

  // The failed exchange.
  const detail = `${base}/exchanges/${id}`;
  response = await page.goto(detail);
  await expectPage(page, response, `exchange ${id}`, { title: ` ${id}`, path: `/exchanges/${id}` });
  const before = await exchangeState(page);
  if (before.badge !== 'failed') fail(`exchange ${id} shows "${before.badge}" before the retry, expected "failed"`);
  const retry = page.locator('form.retry button[type="submit"]');
  if ((await retry.count()) !== 1) fail(`exchange ${id}: no Retry button for the admin`);
  if ((await page.locator('form.retry input[name="csrf"]').getAttribute('value') || '').length < 16) {
    fail(`exchange ${id}: the Retry form carries no CSRF token`);
  }
  log(`exchange ${id}: ${before.badge} after ${before.attempts} attempt(s)`);

  // Press Retry: a POST that redirects back to the detail page.
  let retryPost = null;
  page.on('request', (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === `/exchanges/${id}/retry`) retryPost = r;
  });
  [response] = await Promise.all([page.waitForNavigation(), retry.click()]);
  if (!retryPost) fail('pressing Retry sent no POST to the retry address');
  await expectPage(page, response, 'after pressing Retry', { title: ` ${id}`, path: `/exchanges/${id}` });
  log('Retry pressed');

  // Reload until it has succeeded; a new failure ends the wait at once.
  const deadline = Date.now() + SUCCEED_WITHIN_MS;
  let state = await exchangeState(page);
  while (state.badge !== 'succeeded') {
    if (state.badge === 'failed' && state.attempts > before.attempts) {
      const error = (await page.locator('dl.summary dd.error').first().innerText().catch(() => '')).trim();
      fail(`exchange ${id} failed again after the retry (attempt ${state.attempts}): ${error}`);
    }
    if (Date.now() > deadline) fail(`exchange ${id} is still "${state.badge}" ${SUCCEED_WITHIN_MS / 1000} s after Retry`);
    await page.waitForTimeout(250);
    response = await page.reload();
    await expectPage(page, response, `exchange ${id} (reloaded)`, { title: ` ${id}`, path: `/exchanges/${id}` });
    state = await exchangeState(page);
  }
  if (state.attempts <= before.attempts) fail(`exchange ${id} succeeded without a new attempt (${state.attempts})`);
  const manual = (await page.locator('ol.timeline li').allInnerTexts()).find((t) => t.includes('manual action'));
  if (!manual) fail(`exchange ${id}: the timeline shows no manual action`);
  if (!/retry/.test(manual) || !/status page/.test(manual)) {
    fail(`exchange ${id}: the manual action does not name a status-page retry: "${manual.trim()}"`);
  }
  log(`exchange ${id}: succeeded after ${state.attempts} attempts; timeline: "${manual.replace(/\s+/g, ' ').trim()}"`);
  await screenshot(page, shots, 'exchange.png');
}

async function main() {
  const cfg = settings();
  if (!fs.existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
  if (cfg.shots) fs.mkdirSync(cfg.shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'obmen-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    locale: 'en-US',
    viewport: { width: 1280, height: 800 },
    deviceScaleFactor: 1,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  // Every subresource (the stylesheet) must load, and no script may throw.
  const problems = [];
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && r.request().resourceType() !== 'document') problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
  try {
    await run(cfg, page, context);
    if (problems.length) fail(`the pages had problems:\n  ${problems.join('\n  ')}`);
  } catch (e) {
    if (cfg.shots) await page.screenshot({ path: path.join(cfg.shots, 'failure.png'), fullPage: true }).catch(() => {});
    throw new Check(`${e.message}${e instanceof Check ? '' : `\n${e.stack}`}\n(the page was at ${page.url()})`);
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

const timer = setTimeout(() => {
  console.error(`retry.mjs: FAIL: the run took longer than ${RUN_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, RUN_TIMEOUT_MS);

try {
  await main();
  log('OK');
} catch (e) {
  console.error(`retry.mjs: FAIL: ${e instanceof Check ? e.message : e.stack || e}`);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
}
