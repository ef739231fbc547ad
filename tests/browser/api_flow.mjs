#!/usr/bin/env node
// Headless Chromium opens a page (api_flow.html, served by the Rust test on loopback)
// that fetches TURN credentials from ferroturn's HTTP API and relays a data channel
// through ferroturn with them.
//
//   node api_flow.mjs --page 'http://127.0.0.1:PORT/?api=...&token=...&denied=...' \
//       [--timeout-ms 20000]
//
// Prints the page's result as one JSON line on stdout. Exit status: 0 the flow worked,
// 1 it did not, 2 the check could not run (bad command line, browser missing, hang).

import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const INSTALL_HINT = 'run scripts/install-test-deps.sh from the repository root';
// The same flags as relay.mjs: quiet headless Chromium that may use loopback for WebRTC.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--allow-loopback-in-peer-connection',
];

function fail(message) {
  process.stderr.write(`api_flow.mjs: ${message}\n`);
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      page: { type: 'string' },
      'timeout-ms': { type: 'string', default: '20000' },
      executable: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    },
    strict: true,
  }).values;
} catch (err) {
  fail(err.message);
}
if (!opts.page) fail('--page is required');
const timeoutMs = Number(opts['timeout-ms']);
if (!Number.isInteger(timeoutMs) || timeoutMs < 1000 || timeoutMs > 600000) fail('bad --timeout-ms');
// Only ever talk to this machine: the page and the API it names must be on loopback.
const loopback = (u) => /^http:\/\/(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)(:\d+)?(\/|$)/.test(u);
const page = new URL(opts.page);
if (!loopback(opts.page) || !loopback(page.searchParams.get('api') || '')) {
  fail('--page and its api parameter must be http://127.x.x.x URLs');
}
if (!existsSync(opts.executable)) fail(`Chromium not found at ${opts.executable}; ${INSTALL_HINT}`);

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (err) {
  fail(`cannot load playwright-core (${err.message}); ${INSTALL_HINT}`);
}

const profile = mkdtempSync(join(tmpdir(), 'ferroturn-chromium-api-'));
process.on('exit', () => rmSync(profile, { recursive: true, force: true }));
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => process.exit(2));
// Never outlive the timeout by much, whatever hangs.
setTimeout(() => fail(`hard time limit of ${timeoutMs + 60000} ms reached`), timeoutMs + 60000).unref();

let context;
let code = 2;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.executable,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
  const tab = context.pages()[0] ?? (await context.newPage());
  tab.on('console', (msg) => process.stderr.write(`[page ${msg.type()}] ${msg.text()}\n`));
  tab.on('pageerror', (err) => process.stderr.write(`[page error] ${err}\n`));
  const url = new URL(opts.page);
  url.searchParams.set('timeout', String(timeoutMs));
  await tab.goto(url.toString(), { timeout: 10000 });
  await tab.waitForFunction(() => window.flowResult !== undefined, null, { timeout: timeoutMs + 15000 });
  const result = await tab.evaluate(() => window.flowResult);
  for (const line of result.events || []) process.stderr.write(`  ${line}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  code = result.ok ? 0 : 1;
} catch (err) {
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(err && err.message ? err.message : err) })}\n`);
  process.stderr.write(`api_flow.mjs: ERROR: ${err && err.stack ? err.stack : err}\n`);
} finally {
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 10000).unref())]);
}
process.exit(code);
