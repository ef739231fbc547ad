#!/usr/bin/env node
// Headless Chromium WebRTC relay check for a TURN server listening on loopback.
//
//   node relay.mjs --url 'turn:127.0.0.1:3478?transport=udp' \
//       --username U --credential P --expect connected|failed [--timeout-ms 20000] \
//       [--relay-protocol udp|tcp|tls] [--ca-cert ca.pem]
//
// The URL may be turn:...?transport=udp, turn:...?transport=tcp or turns:... (TLS).
// --relay-protocol: with --expect connected, both peers' selected local candidate must
// be a relay candidate reached over this transport (RTCIceCandidateStats.relayProtocol).
// --ca-cert: a PEM CA certificate Chromium trusts for turns: URLs. Chromium verifies
// the TURN server's certificate like any other TLS server's (against the URL's host),
// so the CA goes into an NSS database ($HOME/.pki/nssdb, made with certutil from
// libnss3-tools) in a temporary HOME that only this Chromium sees.
//
// Two RTCPeerConnections in one page, both restricted to relay candidates
// (iceTransportPolicy 'relay'), exchange ICE candidates directly, open a data
// channel and trade messages both ways. Every byte between the two peers
// therefore goes through the TURN server's relayed transport addresses.
//
// Prints one JSON line on stdout with the outcome. Exit status:
//   0  the outcome matches --expect
//   1  the outcome does not match --expect
//   2  bad command line, or the check could not run (browser missing, crash, hang)

import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CHROMIUM_ARGS, INSTALL_HINT } from './chromium.mjs';

const DEFAULT_EXECUTABLE = '/usr/bin/chromium';

const USAGE =
  'usage: node relay.mjs --url turn:127.0.0.1:PORT?transport=udp --username U --credential P\n' +
  '                      --expect connected|failed [--timeout-ms 20000] [--messages 6]\n' +
  '                      [--relay-protocol udp|tcp|tls] [--ca-cert ca.pem]\n' +
  '                      [--executable /usr/bin/chromium]';

function usage(message) {
  process.stderr.write(`relay.mjs: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseCommandLine() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        url: { type: 'string' },
        username: { type: 'string' },
        credential: { type: 'string' },
        expect: { type: 'string' },
        'timeout-ms': { type: 'string', default: '20000' },
        messages: { type: 'string', default: '6' },
        'relay-protocol': { type: 'string' },
        'ca-cert': { type: 'string' },
        executable: { type: 'string', default: process.env.CHROMIUM_PATH || DEFAULT_EXECUTABLE },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    usage(err.message);
  }
  if (parsed.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  for (const name of ['url', 'username', 'credential', 'expect']) {
    if (parsed[name] === undefined) usage(`--${name} is required`);
  }
  if (parsed.expect !== 'connected' && parsed.expect !== 'failed') {
    usage(`--expect must be 'connected' or 'failed', not '${parsed.expect}'`);
  }
  const timeoutMs = Number(parsed['timeout-ms']);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1000 || timeoutMs > 600000) {
    usage('--timeout-ms must be an integer between 1000 and 600000');
  }
  const messages = Number(parsed.messages);
  if (!Number.isInteger(messages) || messages < 1 || messages > 100) {
    usage('--messages must be an integer between 1 and 100');
  }
  const relayProtocol = parsed['relay-protocol'];
  if (relayProtocol !== undefined && !['udp', 'tcp', 'tls'].includes(relayProtocol)) {
    usage(`--relay-protocol must be udp, tcp or tls, not '${relayProtocol}'`);
  }
  const caCert = parsed['ca-cert'];
  if (caCert !== undefined && !existsSync(caCert)) usage(`--ca-cert ${caCert} does not exist`);
  checkLoopbackUrl(parsed.url);
  return {
    url: parsed.url,
    username: parsed.username,
    credential: parsed.credential,
    expect: parsed.expect,
    timeoutMs,
    messages,
    relayProtocol: relayProtocol ?? null,
    caCert: caCert ?? null,
    executable: parsed.executable,
  };
}

// These tests must only ever talk to this machine: refuse anything but a loopback TURN URL.
function checkLoopbackUrl(url) {
  const m = /^turns?:(\[[0-9a-fA-F:.]+\]|[^:?\[\]]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/.exec(url);
  if (!m) usage(`--url '${url}' is not a turn:HOST[:PORT][?transport=udp|tcp] URL`);
  const host = m[1].toLowerCase();
  const loopback = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === '[::1]' || host === 'localhost';
  if (!loopback) usage(`--url host '${m[1]}' is not a loopback address; this check only talks to loopback`);
}

// A temporary HOME whose NSS database ($HOME/.pki/nssdb, where Chromium on Linux looks
// for locally trusted roots) trusts `caCert` to issue TLS server certificates.
function makeTrustingHome(caCert) {
  const home = mkdtempSync(join(tmpdir(), 'ferroturn-chromium-home-'));
  const db = `sql:${join(home, '.pki', 'nssdb')}`;
  mkdirSync(join(home, '.pki', 'nssdb'), { recursive: true });
  const certutil = (args) => {
    try {
      execFileSync('certutil', args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 15000 });
    } catch (err) {
      rmSync(home, { recursive: true, force: true });
      const hint = err.code === 'ENOENT' ? ` (certutil comes with Debian's libnss3-tools; ${INSTALL_HINT})` : '';
      const output = err.stderr ? `: ${String(err.stderr).trim()}` : '';
      throw new Error(`certutil ${args.join(' ')} failed: ${err.message}${output}${hint}`);
    }
  };
  certutil(['-N', '-d', db, '--empty-password']);
  certutil(['-A', '-d', db, '-n', 'ferroturn test CA', '-t', 'C,,', '-i', caCert]);
  return home;
}

// ---------------------------------------------------------------------------------------
// Runs inside the page. Must be self-contained: Playwright serialises it as source text.
async function relayCheckInPage({ iceServer, timeoutMs, messageCount }) {
  const t0 = performance.now();
  const elapsed = () => Math.round(performance.now() - t0);
  const events = [];
  const note = (text) => events.push(`${elapsed()}ms ${text}`);
  const errors = [];

  const config = { iceTransportPolicy: 'relay', iceServers: [iceServer] };
  const peers = {};
  for (const name of ['a', 'b']) {
    peers[name] = {
      name,
      pc: new RTCPeerConnection(config),
      pendingRemote: [],
      localCandidates: [],
      candidateErrors: [],
      gatheringComplete: false,
      everConnected: false,
      channel: null,
      channelOpened: false,
    };
  }
  const { a, b } = peers;
  a.other = b;
  b.other = a;

  // Deterministic payloads of several sizes, text and binary, so that some messages
  // span many SCTP chunks (and so many relayed UDP datagrams).
  const sizes = [1, 100, 1200, 5000, 16000, 60000];
  const makePayload = (from, i) => {
    const size = sizes[i % sizes.length];
    if (i % 2 === 0) {
      const head = `${from}->${i}:`;
      let s = head;
      let k = 0;
      while (s.length < size) s += String.fromCharCode(33 + ((k++ * 7 + i) % 94));
      return s.slice(0, Math.max(size, head.length));
    }
    const bytes = new Uint8Array(size);
    for (let k = 0; k < size; k++) bytes[k] = (k * 31 + i * 17 + (from === 'a' ? 0 : 101)) & 0xff;
    return bytes;
  };
  const sameData = (expected, got) => {
    if (typeof expected === 'string') return typeof got === 'string' && got === expected;
    if (!(got instanceof ArrayBuffer)) return false;
    const view = new Uint8Array(got);
    if (view.length !== expected.length) return false;
    for (let k = 0; k < view.length; k++) if (view[k] !== expected[k]) return false;
    return true;
  };
  const describe = (d) =>
    typeof d === 'string' ? `text(${d.length})` : `binary(${d.byteLength ?? d.length})`;

  const fromA = Array.from({ length: messageCount }, (_, i) => makePayload('a', i));
  const fromB = Array.from({ length: messageCount }, (_, i) => makePayload('b', i));
  const counts = {
    sentAtoB: 0,
    receivedAtB: 0,
    intactAtB: 0,
    echoesAtA: 0,
    intactEchoesAtA: 0,
    sentBtoA: 0,
    receivedFromBAtA: 0,
    intactFromBAtA: 0,
  };

  let settle;
  const settled = new Promise((resolve) => (settle = resolve));
  let outcome = null;
  const finish = (kind, reason) => {
    if (outcome) return;
    outcome = { kind, reason };
    note(`settled: ${kind}: ${reason}`);
    settle();
  };
  const timer = setTimeout(() => finish('timeout', `no conclusion within ${timeoutMs} ms`), timeoutMs);

  const candidateType = (c) => {
    if (c.type) return c.type;
    const m = / typ (\w+)/.exec(c.candidate || '');
    return m ? m[1] : 'unknown';
  };

  const flushPending = async (peer) => {
    const pending = peer.pendingRemote.splice(0);
    for (const c of pending) {
      try {
        await peer.pc.addIceCandidate(c);
      } catch (err) {
        errors.push(`${peer.name}: addIceCandidate failed: ${err}`);
      }
    }
  };

  for (const peer of [a, b]) {
    const { pc, name } = peer;
    pc.onicecandidate = (ev) => {
      if (!ev.candidate) {
        peer.gatheringComplete = true;
        note(`${name}: gathering complete, ${peer.localCandidates.length} candidate(s)`);
        if (peer.localCandidates.length === 0) {
          // With a relay-only policy and no local candidate this peer can never send.
          finish('failed', `${name} gathered no relay candidate`);
        }
        return;
      }
      const c = ev.candidate;
      if (!c.candidate) return; // end-of-candidates marker for a generation
      peer.localCandidates.push({
        type: candidateType(c),
        protocol: c.protocol,
        address: c.address,
        port: c.port,
      });
      note(`${name}: local candidate ${c.candidate}`);
      const other = peer.other;
      const init = c.toJSON();
      if (other.pc.remoteDescription) {
        other.pc.addIceCandidate(init).catch((err) => errors.push(`${other.name}: addIceCandidate failed: ${err}`));
      } else {
        other.pendingRemote.push(init);
      }
    };
    pc.onicecandidateerror = (ev) => {
      const e = { errorCode: ev.errorCode, errorText: ev.errorText, url: ev.url };
      peer.candidateErrors.push(e);
      note(`${name}: icecandidateerror ${ev.errorCode} ${ev.errorText} ${ev.url}`);
    };
    pc.onconnectionstatechange = () => {
      note(`${name}: connectionState ${pc.connectionState}`);
      if (pc.connectionState === 'connected') peer.everConnected = true;
      if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
        finish('failed', `${name} connectionState ${pc.connectionState}`);
      }
    };
    pc.oniceconnectionstatechange = () => note(`${name}: iceConnectionState ${pc.iceConnectionState}`);
  }

  const sendAll = (channel, list, counter) => {
    for (const d of list) {
      channel.send(d);
      counts[counter]++;
    }
  };

  const maybeDone = () => {
    if (
      counts.intactAtB === messageCount &&
      counts.intactEchoesAtA === messageCount &&
      counts.intactFromBAtA === messageCount
    ) {
      finish('connected', 'all messages arrived intact in both directions');
    }
  };

  // Peer b echoes every message from a, then, once it has all of them, sends its own.
  b.pc.ondatachannel = (ev) => {
    const ch = ev.channel;
    note(`b: datachannel event '${ch.label}' id ${ch.id} ${ch.readyState}`);
    b.channel = ch;
    ch.binaryType = 'arraybuffer';
    const markOpen = () => {
      if (b.channelOpened) return;
      b.channelOpened = true;
      note('b: data channel open');
    };
    ch.onopen = markOpen;
    if (ch.readyState === 'open') markOpen();
    ch.onmessage = (m) => {
      const i = counts.receivedAtB++;
      if (i < messageCount && sameData(fromA[i], m.data)) {
        counts.intactAtB++;
      } else {
        errors.push(`b: message ${i} from a is wrong: got ${describe(m.data)}`);
        finish('error', 'corrupted or unexpected message at b');
        return;
      }
      ch.send(m.data);
      if (counts.receivedAtB === messageCount) {
        note('b: all messages from a received; sending own messages');
        sendAll(ch, fromB, 'sentBtoA');
      }
    };
  };

  // Ordered channel: a sees the echoes of its messages first, then b's own messages.
  const chA = a.pc.createDataChannel('ferroturn-relay-check', { ordered: true });
  a.channel = chA;
  chA.binaryType = 'arraybuffer';
  chA.onopen = () => {
    a.channelOpened = true;
    note('a: data channel open; sending messages');
    sendAll(chA, fromA, 'sentAtoB');
  };
  chA.onmessage = (m) => {
    if (counts.echoesAtA < messageCount) {
      const i = counts.echoesAtA++;
      if (sameData(fromA[i], m.data)) counts.intactEchoesAtA++;
      else {
        errors.push(`a: echo ${i} is wrong: got ${describe(m.data)}`);
        finish('error', 'corrupted echo at a');
        return;
      }
    } else {
      const i = counts.receivedFromBAtA++;
      if (i < messageCount && sameData(fromB[i], m.data)) counts.intactFromBAtA++;
      else {
        errors.push(`a: message ${i} from b is wrong: got ${describe(m.data)}`);
        finish('error', 'corrupted or unexpected message at a');
        return;
      }
    }
    maybeDone();
  };

  try {
    const offer = await a.pc.createOffer();
    await a.pc.setLocalDescription(offer);
    await b.pc.setRemoteDescription(offer);
    await flushPending(b);
    const answer = await b.pc.createAnswer();
    await b.pc.setLocalDescription(answer);
    await a.pc.setRemoteDescription(answer);
    await flushPending(a);
    note('offer/answer done');
  } catch (err) {
    errors.push(`negotiation failed: ${err}`);
    finish('error', 'offer/answer negotiation failed');
  }

  await settled;
  clearTimeout(timer);

  const pairOf = async (peer) => {
    const stats = await peer.pc.getStats();
    let pair = null;
    let selected = false;
    stats.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId && stats.has(r.selectedCandidatePairId)) {
        pair = stats.get(r.selectedCandidatePairId);
        selected = true;
      }
    });
    if (!pair) {
      stats.forEach((r) => {
        if (r.type === 'candidate-pair' && r.state === 'succeeded' && (!pair || r.nominated)) pair = r;
      });
    }
    let pairsSeen = 0;
    stats.forEach((r) => {
      if (r.type === 'candidate-pair') pairsSeen++;
    });
    if (!pair) return { found: false, pairsSeen };
    const local = stats.get(pair.localCandidateId) || {};
    const remote = stats.get(pair.remoteCandidateId) || {};
    return {
      found: true,
      selected,
      pairsSeen,
      state: pair.state,
      nominated: !!pair.nominated,
      localCandidateType: local.candidateType ?? null,
      remoteCandidateType: remote.candidateType ?? null,
      relayProtocol: local.relayProtocol ?? null,
      localAddress: local.address != null ? `${local.address}:${local.port}` : null,
      remoteAddress: remote.address != null ? `${remote.address}:${remote.port}` : null,
      localUrl: local.url ?? null,
      bytesSent: pair.bytesSent ?? null,
      bytesReceived: pair.bytesReceived ?? null,
      requestsSent: pair.requestsSent ?? null,
      responsesReceived: pair.responsesReceived ?? null,
    };
  };

  const selectedPair = {};
  for (const peer of [a, b]) {
    try {
      selectedPair[peer.name] = await pairOf(peer);
    } catch (err) {
      selectedPair[peer.name] = { found: false, error: String(err) };
    }
  }

  const state = {};
  const candidates = {};
  const candidateErrors = {};
  for (const peer of [a, b]) {
    state[peer.name] = {
      connectionState: peer.pc.connectionState,
      iceConnectionState: peer.pc.iceConnectionState,
      iceGatheringState: peer.pc.iceGatheringState,
      everConnected: peer.everConnected,
      channelOpened: peer.channelOpened,
    };
    candidates[peer.name] = peer.localCandidates;
    candidateErrors[peer.name] = peer.candidateErrors;
  }
  for (const peer of [a, b]) {
    try {
      if (peer.channel) peer.channel.close();
      peer.pc.close();
    } catch (err) {
      errors.push(`${peer.name}: close failed: ${err}`);
    }
  }
  return {
    settledAs: outcome.kind,
    reason: outcome.reason,
    elapsedMs: elapsed(),
    state,
    messages: { perDirection: messageCount, ...counts },
    candidates,
    candidateErrors,
    selectedPair,
    errors,
    events,
  };
}
// ---------------------------------------------------------------------------------------

function judge(opts, r) {
  const m = r.messages;
  const n = m.perDirection;
  const pairs = ['a', 'b'].map((k) => r.selectedPair[k] || { found: false });
  // The transport's selected pair can read 'in-progress' while a consent check is in
  // flight; a selected pair that got check responses has succeeded at least once.
  const checked = (p) => p.state === 'succeeded' || (p.selected && p.responsesReceived > 0);
  const relayPair = (p) =>
    p.found && checked(p) && p.localCandidateType === 'relay' && p.remoteCandidateType === 'relay';
  // Stats report relayProtocol on local relay candidates only: how this peer reached the server.
  const overProtocol = (p) => opts.relayProtocol === null || p.relayProtocol === opts.relayProtocol;
  const connectedOk =
    r.settledAs === 'connected' &&
    r.state.a.everConnected &&
    r.state.b.everConnected &&
    m.intactAtB === n &&
    m.intactEchoesAtA === n &&
    m.intactFromBAtA === n &&
    pairs.every(relayPair) &&
    pairs.every(overProtocol);
  const anyConnected =
    r.state.a.everConnected || r.state.b.everConnected || r.state.a.channelOpened || r.state.b.channelOpened;
  const anyMessage = m.receivedAtB + m.echoesAtA + m.receivedFromBAtA > 0;
  const outcome = connectedOk ? 'connected' : !anyConnected && !anyMessage ? 'failed' : 'broken';

  let ok;
  let message;
  if (opts.expect === 'connected') {
    ok = connectedOk;
    if (ok) {
      message =
        `relayed ${n} messages each way (plus echoes) over a relay/relay candidate pair` +
        (opts.relayProtocol ? ` (relayProtocol ${opts.relayProtocol})` : '');
    } else {
      const why = [];
      if (r.settledAs !== 'connected') why.push(`check ended as '${r.settledAs}': ${r.reason}`);
      if (!r.state.a.everConnected || !r.state.b.everConnected) why.push('a peer never reached connected');
      if (m.intactAtB !== n) why.push(`b got ${m.intactAtB}/${n} intact messages`);
      if (m.intactEchoesAtA !== n) why.push(`a got ${m.intactEchoesAtA}/${n} intact echoes`);
      if (m.intactFromBAtA !== n) why.push(`a got ${m.intactFromBAtA}/${n} intact messages from b`);
      for (const [k, p] of [['a', pairs[0]], ['b', pairs[1]]]) {
        if (!relayPair(p)) {
          why.push(
            p.found
              ? `${k}: selected pair is ${p.localCandidateType}/${p.remoteCandidateType} (${p.state}, ` +
                `${p.responsesReceived} check responses), not a checked relay/relay pair`
              : `${k}: no selected/succeeded candidate pair`,
          );
        }
        if (p.found && !overProtocol(p)) {
          why.push(`${k}: selected local candidate has relayProtocol ${p.relayProtocol}, not ${opts.relayProtocol}`);
        }
      }
      message = `expected connected: ${why.join('; ')}`;
    }
  } else {
    ok = !anyConnected && !anyMessage;
    message = ok
      ? `did not connect (${r.reason}) and no message passed, as expected`
      : `expected failed, but ${anyConnected ? 'a peer connected' : ''}${anyConnected && anyMessage ? ' and ' : ''}${
          anyMessage ? 'messages passed' : ''
        }`;
  }

  const relayProtocol = pairs[0].relayProtocol ?? pairs[1].relayProtocol ?? null;
  return { ok, outcome, message, relayProtocol };
}

async function main() {
  const opts = parseCommandLine();
  if (!existsSync(opts.executable)) {
    process.stderr.write(`relay.mjs: Chromium not found at ${opts.executable}; ${INSTALL_HINT}\n`);
    process.exit(2);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (err) {
    process.stderr.write(`relay.mjs: cannot load playwright-core (${err.message}); ${INSTALL_HINT}\n`);
    process.exit(2);
  }

  let home = null;
  if (opts.caCert) {
    try {
      home = makeTrustingHome(opts.caCert);
    } catch (err) {
      process.stdout.write(
        `${JSON.stringify({ ok: false, expect: opts.expect, outcome: 'error', message: err.message, url: opts.url })}\n`,
      );
      process.stderr.write(`relay.mjs: ERROR: ${err.message}\n`);
      process.exit(2);
    }
  }
  const userDataDir = mkdtempSync(join(tmpdir(), 'ferroturn-chromium-'));
  let context = null;
  const removeProfile = () => {
    for (const dir of [userDataDir, home]) {
      if (!dir) continue;
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // Best effort: Chromium may still be writing while it is killed.
      }
    }
  };
  // Playwright kills the browser on process exit; the profile directory is ours to remove.
  process.on('exit', removeProfile);
  let closing = false;
  const closeBrowser = async () => {
    if (closing || !context) return;
    closing = true;
    await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 10000).unref())]);
  };
  let interrupted = null;
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = { signal, code };
      process.stderr.write(`relay.mjs: got ${signal}, closing the browser\n`);
      closeBrowser().finally(() => process.exit(code));
    });
  }
  // Last resort: whatever hangs, never outlive the timeout by much.
  const hardLimitMs = opts.timeoutMs + 60000;
  const watchdog = setTimeout(() => {
    process.stderr.write(`relay.mjs: hard time limit of ${hardLimitMs} ms reached, killing the browser\n`);
    process.exit(2); // the exit hooks kill Chromium and remove the profile
  }, hardLimitMs);
  watchdog.unref();

  let exitCode = 2;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: opts.executable,
      headless: true,
      args: CHROMIUM_ARGS,
      env: home ? { ...process.env, HOME: home } : process.env,
      timeout: 30000,
      handleSIGINT: false,
      handleSIGTERM: false,
      handleSIGHUP: false,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('console', (msg) => process.stderr.write(`[page ${msg.type()}] ${msg.text()}\n`));
    page.on('pageerror', (err) => process.stderr.write(`[page error] ${err}\n`));
    await page.setContent('<!doctype html><title>ferroturn relay check</title>', { timeout: 10000 });

    const iceServer = { urls: opts.url, username: opts.username, credential: opts.credential };
    let evalTimer;
    const result = await Promise.race([
      page.evaluate(relayCheckInPage, { iceServer, timeoutMs: opts.timeoutMs, messageCount: opts.messages }),
      new Promise((_, reject) => {
        evalTimer = setTimeout(
          () => reject(new Error(`page did not finish within ${opts.timeoutMs + 15000} ms`)),
          opts.timeoutMs + 15000,
        );
      }),
    ]).finally(() => clearTimeout(evalTimer));

    for (const line of result.events) process.stderr.write(`  ${line}\n`);
    for (const line of result.errors) process.stderr.write(`  error: ${line}\n`);

    const verdict = judge(opts, result);
    const summary = {
      ok: verdict.ok,
      expect: opts.expect,
      outcome: verdict.outcome,
      message: verdict.message,
      url: opts.url,
      settledAs: result.settledAs,
      reason: result.reason,
      elapsedMs: result.elapsedMs,
      state: result.state,
      messages: result.messages,
      relayProtocol: verdict.relayProtocol,
      selectedPair: result.selectedPair,
      candidates: result.candidates,
      candidateErrors: result.candidateErrors,
      errors: result.errors,
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    if (verdict.ok) {
      process.stderr.write(`relay.mjs: OK: ${verdict.message}\n`);
      exitCode = 0;
    } else {
      process.stderr.write(`relay.mjs: FAIL: ${verdict.message}\n`);
      exitCode = 1;
    }
  } catch (err) {
    if (interrupted) {
      err = new Error(`interrupted by ${interrupted.signal}`);
    }
    process.stdout.write(
      `${JSON.stringify({ ok: false, expect: opts.expect, outcome: 'error', message: String(err && err.message ? err.message : err), url: opts.url })}\n`,
    );
    process.stderr.write(`relay.mjs: ERROR: ${err && err.stack ? err.stack : err}\n`);
    if (/Failed to launch|executable/i.test(String(err))) {
      process.stderr.write(`relay.mjs: could not start Chromium; ${INSTALL_HINT}\n`);
    }
    exitCode = 2;
  } finally {
    await closeBrowser();
    removeProfile();
  }
  process.exit(interrupted ? interrupted.code : exitCode);
}

main();
