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

import { CHROMIUM_ARGS, close, failer, options, prepare } from './chromium.mjs';

const fail = failer('api_flow.mjs');

const opts = options(fail);
const { timeoutMs } = opts;
// Only ever talk to this machine: the page and the API it names must be on loopback.
const loopback = (u) => /^http:\/\/(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)(:\d+)?(\/|$)/.test(u);
const page = new URL(opts.page);
if (!loopback(opts.page) || !loopback(page.searchParams.get('api') || '')) {
  fail('--page and its api parameter must be http://127.x.x.x URLs');
}
const { chromium, profile } = await prepare(fail, opts.executable, 'ferroturn-chromium-api-', timeoutMs);

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
  await close(context);
}
process.exit(code);
