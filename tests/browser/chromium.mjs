// What the browser scripts share: Chromium's flags (all three), and for the ones that
// drive a page (api_flow.mjs, status_page.mjs) their common options, exiting with status
// 2 when the check cannot run, and a throwaway profile bounded in time.

import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

export const INSTALL_HINT = 'run scripts/install-test-deps.sh from the repository root';

// Flags for a quiet, self-contained headless Chromium. --allow-loopback-in-peer-connection
// lets WebRTC use the loopback interface, which is where the TURN server and its
// relayed addresses live in these tests.
export const CHROMIUM_ARGS = [
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

// A function that prints `<script>: message` and exits with status 2 (could not run).
export function failer(script) {
  return (message) => {
    process.stderr.write(`${script}: ${message}\n`);
    process.exit(2);
  };
}

// The command line: --page, --timeout-ms (checked, returned as timeoutMs) and
// --executable, plus `extra` (parseArgs options); a bad one fails.
export function options(fail, extra = {}) {
  let opts;
  try {
    opts = parseArgs({
      options: {
        page: { type: 'string' },
        'timeout-ms': { type: 'string', default: '20000' },
        executable: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
        ...extra,
      },
      strict: true,
    }).values;
  } catch (err) {
    fail(err.message);
  }
  if (!opts.page) fail('--page is required');
  const timeoutMs = Number(opts['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1000 || timeoutMs > 600000) fail('bad --timeout-ms');
  return { ...opts, timeoutMs };
}

// playwright-core's chromium, a profile directory removed at exit, and a hard time
// limit of `timeoutMs` + 60 s whatever hangs.
export async function prepare(fail, executable, profilePrefix, timeoutMs) {
  if (!existsSync(executable)) fail(`Chromium not found at ${executable}; ${INSTALL_HINT}`);
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (err) {
    fail(`cannot load playwright-core (${err.message}); ${INSTALL_HINT}`);
  }
  const profile = mkdtempSync(join(tmpdir(), profilePrefix));
  process.on('exit', () => rmSync(profile, { recursive: true, force: true }));
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => process.exit(2));
  setTimeout(() => fail(`hard time limit of ${timeoutMs + 60000} ms reached`), timeoutMs + 60000).unref();
  return { chromium, profile };
}

// Closes the browser, giving up after 10 s.
export async function close(context) {
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 10000).unref())]);
}
