#!/usr/bin/env node
// Headless Chromium loads ferroturn's status page (GET / on the HTTP API), waits until
// it has drawn its chart with data, reads what it shows, and takes screenshots; then
// enters a wrong admin key (the page must say it was refused) and the right one (the
// page must list the users).
//
//   STATUS_ADMIN_KEY=... node status_page.mjs --page http://127.0.0.1:PORT/ \
//       --screenshot /tmp/status.png [--timeout-ms 20000]
//
// Writes <screenshot> (the public view) and <screenshot minus .png>-admin.png (with
// the users). Prints one JSON line on stdout: what the page showed, every request it
// made, Content-Security-Policy violations and console errors. Exit status: 0 the page
// rendered, 1 it did not, 2 the check could not run (bad command line, no browser).

import { CHROMIUM_ARGS, close, failer, options, prepare } from './chromium.mjs';

const fail = failer('status_page.mjs');

const opts = options(fail, { screenshot: { type: 'string' } });
const { timeoutMs } = opts;
if (!opts.screenshot) fail('--screenshot is required');
if (!/^http:\/\/127\.0\.0\.1:\d+\/$/.test(opts.page)) fail('--page must be http://127.0.0.1:PORT/');
if (!opts.screenshot.endsWith('.png')) fail('--screenshot must name a .png file');
const adminKey = process.env.STATUS_ADMIN_KEY || '';
if (!adminKey) fail('STATUS_ADMIN_KEY is not set');
const { chromium, profile } = await prepare(fail, opts.executable, 'ferroturn-chromium-status-', timeoutMs);

// What the page shows, read from its DOM the way a person would read it.
function readPage() {
  const t = (id) => document.getElementById(id).textContent.trim();
  const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)];
  const chart = document.getElementById('chart');
  return {
    node: t('node'),
    state: t('state'),
    allocations: t('alloc'),
    udp: t('alloc-udp'),
    tcp: t('alloc-tcp'),
    dtls: t('alloc-dtls'),
    rate: t('rate'),
    relayedBytes: t('bytes'),
    packets: t('packets'),
    errors: rows('errors').map((r) => ({ code: r.dataset.code, text: r.textContent.trim() })),
    authFailures: rows('auth').map((r) => r.dataset.reason),
    shards: rows('shards').length,
    chart: {
      drawn: chart.dataset.drawn === '1',
      samples: Number(chart.dataset.samples),
      peak: Number(chart.dataset.peak),
      paths: chart.querySelectorAll('path').length,
      label: chart.getAttribute('aria-label'),
    },
    usersVisible: !document.getElementById('users').hidden,
    users: rows('users').map((r) => ({ user: r.dataset.user, text: r.textContent.trim() })),
    message: t('msg'),
  };
}

let context;
let code = 2;
const requests = [];
const consoleErrors = [];
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.executable,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 900 },
    deviceScaleFactor: 1,
    colorScheme: 'light',
    timeout: 30000,
  });
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.on('request', (r) =>
    requests.push({ url: r.url(), method: r.method(), authorization: 'authorization' in r.headers() }));
  tab.on('console', (msg) => {
    process.stderr.write(`[page ${msg.type()}] ${msg.text()}\n`);
    if (msg.type() === 'error') consoleErrors.push(msg.text());
  });
  tab.on('pageerror', (err) => consoleErrors.push(String(err)));
  await tab.addInitScript(() => {
    window.cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  await tab.goto(opts.page, { timeout: 10000 });
  // Drawn with at least one sample that saw traffic.
  await tab.waitForFunction(() => {
    const c = document.getElementById('chart');
    return Number(document.body.dataset.updates) >= 1 && c.dataset.drawn === '1' && Number(c.dataset.peak) > 0;
  }, null, { timeout: timeoutMs });
  const shown = await tab.evaluate(readPage);
  await tab.screenshot({ path: opts.screenshot, fullPage: true });

  // A wrong key is refused, and the page says so.
  await tab.fill('#key', 'not-the-admin-key');
  await tab.click('#key-form button[type=submit]');
  await tab.waitForFunction(() => /refused/.test(document.getElementById('msg').textContent), null, { timeout: timeoutMs });
  const refused = await tab.evaluate(readPage);

  // The right key shows the users.
  await tab.fill('#key', adminKey);
  await tab.click('#key-form button[type=submit]');
  await tab.waitForFunction(() => document.querySelectorAll('#users tbody tr').length > 0 && !document.getElementById('users').hidden, null, { timeout: timeoutMs });
  const admin = await tab.evaluate(readPage);
  await tab.screenshot({ path: opts.screenshot.replace(/\.png$/, '-admin.png'), fullPage: true });
  const cspViolations = await tab.evaluate(() => window.cspViolations);

  const result = { ok: true, shown, refused, admin, requests, cspViolations, consoleErrors };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  code = 0;
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(err && err.message ? err.message : err), requests, consoleErrors })}\n`);
  process.stderr.write(`status_page.mjs: ERROR: ${err && err.stack ? err.stack : err}\n`);
  code = 1;
} finally {
  await close(context);
}
process.exit(code);
