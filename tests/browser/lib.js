// What the browser tests share: a lab on free ports (scripts/lab), its pids, Debian's
// Chromium through playwright-core, and waiting for a condition. Starts nothing by itself.
'use strict';

const { chromium } = require('playwright-core');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const LAB = path.join(ROOT, 'scripts', 'lab');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const t0 = Date.now();

const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

// A base port whose lab ports (base+0..4, base+80) are all free.
async function freeBase() {
  for (let i = 0; i < 100; i++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    if (fs.existsSync(path.join(ROOT, '.lab', String(base)))) continue;
    let ok = true;
    for (const p of [base, base + 1, base + 2, base + 3, base + 4, base + 80]) {
      if (!(await portFree(p))) { ok = false; break; }
    }
    if (ok) return base;
  }
  throw new Error('no free base port found');
}

// scripts/lab <cmd> on base, with env added to this process' environment.
function lab(cmd, base, timeoutMs, env) {
  const r = spawnSync(LAB, [cmd, '--base-port', String(base), '--no-build'],
    { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) {
    throw new Error(`lab ${cmd} failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n` +
      `${r.stdout || ''}${r.stderr || ''}`);
  }
}

// The pid of one of the lab's services (the lab started it for this test).
function labPid(base, service) {
  const f = path.join(ROOT, '.lab', String(base), 'pids', `${service}.pid`);
  return fs.existsSync(f) ? Number(fs.readFileSync(f, 'utf8').trim()) : null;
}

// Polls fn until it returns true or an object; fails with the last value seen (a string
// says what is not there yet).
async function until(desc, fn, ms = 10000, every = 100) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last === true || (last && typeof last !== 'string')) return last;
    } catch (e) {
      last = e.message;
    }
    await sleep(every);
  }
  throw new Error(`timed out waiting for ${desc} (last seen: ${JSON.stringify(last)})`);
}

// Headless Chromium with its own profile in dir, 1280x800.
function browser(dir) {
  return chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, timeout: 20000,
    viewport: { width: 1280, height: 800 }, colorScheme: 'light',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// On SIGINT or SIGTERM: down() (the lab), then the temp folder tmp goes, and exit 1.
function downOnSignal(down, tmp) {
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      console.error(`${sig}: stopping the lab`);
      down();
      fs.rmSync(tmp, { recursive: true, force: true });
      process.exit(1);
    });
  }
}

module.exports = { ROOT, CHROMIUM, log, sleep, portFree, freeBase, lab, labPid, until, browser,
  downOnSignal };
