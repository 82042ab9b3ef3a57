// Real-browser test of the dashboard (web/): starts its own lab on free ports, drives the
// page in Debian's Chromium through playwright-core, and checks what a person would see:
// healthy regions, an increment and where it went, a partition and the divergence it
// causes, heal + force-sync and convergence. Always stops the lab. Bounded by BUDGET_MS.
//
//   node tests/browser/dashboard_test.js      (tests/browser/run.sh installs what it needs)
//   env: COUNTERD_BIN (the binary the lab runs), CHROMIUM (default /usr/bin/chromium),
//        SCREENSHOT_DIR (default the system temp folder)
'use strict';

const { chromium } = require('playwright-core');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const LAB = path.join(ROOT, 'scripts', 'lab');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REGIONS = ['us-east', 'us-west', 'eu-west'];
const BUDGET_MS = 55000;
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

// A base port whose lab ports (base+0..3, base+80) are all free.
async function freeBase() {
  for (let i = 0; i < 100; i++) {
    const base = 20000 + Math.floor(Math.random() * 40000);
    if (fs.existsSync(path.join(ROOT, '.lab', String(base)))) continue;
    let ok = true;
    for (const p of [base, base + 1, base + 2, base + 3, base + 80]) {
      if (!(await portFree(p))) { ok = false; break; }
    }
    if (ok) return base;
  }
  throw new Error('no free base port found');
}

function lab(cmd, base, timeoutMs) {
  // Replication only on demand (force-sync), so what the page shows is deterministic.
  const env = { ...process.env, SYNC_INTERVAL_MS: '600000' };
  const r = spawnSync(LAB, [cmd, '--base-port', String(base), '--no-build'],
    { cwd: ROOT, env, encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) {
    throw new Error(`lab ${cmd} failed (status ${r.status}${r.error ? `, ${r.error.message}` : ''}):\n` +
      `${r.stdout || ''}${r.stderr || ''}`);
  }
}

// Polls fn until it returns a truthy value; fails with the last value seen.
async function until(desc, fn, ms = 10000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last === true || (last && typeof last !== 'string')) return last;
    } catch (e) {
      last = e.message;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${desc} (last seen: ${JSON.stringify(last)})`);
}

async function scenario(page, gw, shots) {
  const tid = (id) => page.getByTestId(id);
  const text = async (id) => ((await tid(id).textContent({ timeout: 2000 })) || '').trim();
  const apiStatus = async () => (await fetch(`${gw}/api/status`)).json();
  // Waits until the counters table shows these totals, and whether the regions agree.
  const totals = (name, want, agree) => until(`counter ${name} at ${JSON.stringify(want)}`, async () => {
    const seen = {};
    for (const r of REGIONS) seen[r] = await text(`counter-${name}-${r}`);
    const a = await text(`counter-${name}-agree`);
    const good = REGIONS.every((r) => seen[r] === String(want[r])) && a.startsWith(agree ? 'yes' : 'no');
    return good || `${JSON.stringify(seen)} agree: ${a}`;
  });

  await page.goto(`${gw}/`);
  assert.equal(await page.title(), 'counterd dashboard');
  await until('three healthy, connected regions', async () => {
    for (const r of REGIONS) {
      const s = await text(`region-${r}-status`), p = await text(`region-${r}-partition`);
      if (s !== 'healthy' || p !== 'connected') return `${r}: ${s}, ${p}`;
      if (await text(`region-${r}-node`) !== `${r}-1`) return `${r}: node id`;
    }
    return (await text('live')).startsWith('Live') || 'not live';
  });
  log('ok: the three regions show healthy and connected, with their node ids');

  // An API error is shown with its detail.
  await tid('inc-name').fill('not a valid name!');
  await tid('inc-submit').click();
  await until('the bad_name error', async () => {
    const t = await text('error-text');
    return (await tid('error').isVisible() && /bad_name/.test(t) && /1-200 bytes/.test(t)) || t;
  });
  log(`ok: the API's error is shown: ${await text('error-text')}`);

  // An increment through the page: where it went, its latency, and the count.
  const name = 'pageviews';
  await tid('inc-name').fill(name);
  await tid('inc-amount').fill('3');
  await tid('inc-routing').selectOption('random');
  await tid('inc-submit').click();
  const [routed] = await until('the routed region', async () => {
    const r = await text('inc-routed').catch(() => '');
    return REGIONS.includes(r) ? [r] : `routed: ${r}`;
  });
  assert.match(await text('inc-latency'), /^\d+(\.\d+)? ms$/);
  assert.equal(await tid('error').isVisible(), false, 'a success clears the error');
  const want = Object.fromEntries(REGIONS.map((r) => [r, r === routed ? 3 : 0]));
  await totals(name, want, false);
  await until('the global view of the counter', async () =>
    (await text('global-name')) === name && (await text('global-count')) === '3');
  log(`ok: increment of 3 routed to ${routed} (${await text('inc-latency')}) and counted there`);

  await tid('force-sync').click();
  await totals(name, { 'us-east': 3, 'us-west': 3, 'eu-west': 3 }, true);
  log('ok: force-sync spreads it to every region');

  // Partition us-east through the page; the API agrees.
  await tid('partition-us-east').click();
  await until('us-east marked partitioned', async () =>
    (await text('region-us-east-partition')) === 'partitioned' || await text('region-us-east-partition'));
  const st = await apiStatus();
  assert.equal(st.regions['us-east'].network_partition, true);
  assert.equal(st.regions['us-west'].network_partition, false);
  assert.equal(await tid('partition-us-east').isDisabled(), true);
  assert.equal(await tid('heal-us-east').isEnabled(), true);
  log('ok: us-east shows partitioned, and GET /api/status agrees');

  // An increment in the partitioned region: the regions diverge, even after a force-sync.
  await tid('inc-amount').fill('5');
  await tid('inc-routing').selectOption('us-east');
  await tid('inc-submit').click();
  await until('routed to us-east', async () => (await text('inc-result')).includes('us-east now counts 8'));
  await totals(name, { 'us-east': 8, 'us-west': 3, 'eu-west': 3 }, false);
  assert.match(await tid(`counter-row-${name}`).getAttribute('class'), /diverged/);
  await until('not converged', async () =>
    (await text('global-converged')) === 'not converged' && (await text('global-lag')).startsWith('5 '));
  await tid('force-sync').click();
  await until('the force-sync answer', async () => (await text('admin-result')).startsWith('Force sync done'));
  await sleep(1200);
  await totals(name, { 'us-east': 8, 'us-west': 3, 'eu-west': 3 }, false);
  await page.screenshot({ path: shots.diverged, fullPage: true });
  log('ok: divergence is shown (us-east 8, the others 3) and a partition holds through force-sync');

  // Heal, force-sync, convergence.
  await tid('heal-us-east').click();
  await until('us-east healed', async () => (await text('region-us-east-partition')) === 'connected');
  assert.equal((await apiStatus()).regions['us-east'].network_partition, false);
  await tid('force-sync').click();
  await totals(name, { 'us-east': 8, 'us-west': 8, 'eu-west': 8 }, true);
  await until('converged in the global view', async () => {
    if ((await text('global-converged')) !== 'converged') return await text('global-converged');
    if ((await text('global-count')) !== '8' || !(await text('global-lag')).startsWith('0 ')) return 'count/lag';
    for (const r of REGIONS) if ((await text(`global-region-${r}-total`)) !== '8') return `${r} total`;
    return true;
  });
  log('ok: after heal + force-sync every region counts 8 and the page shows converged');

  await tid('heal-all').click();
  await until('heal all answered', async () => /All regions healed \(3 updated\)/.test(await text('admin-result')));
  await page.screenshot({ path: shots.converged, fullPage: true });
  log(`ok: heal all; screenshots ${shots.diverged} ${shots.converged}`);
}

async function main() {
  const base = await freeBase();
  const gw = `http://127.0.0.1:${base + 80}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'counterd-browser-'));
  const shotDir = process.env.SCREENSHOT_DIR || os.tmpdir();
  const shots = {
    diverged: path.join(shotDir, `counterd-dashboard-${base}-diverged.png`),
    converged: path.join(shotDir, `counterd-dashboard-${base}.png`),
  };
  const down = () => {
    try { lab('down', base, 40000); } catch (e) { console.error(e.message); } // <= 5 s a service
  };
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, () => {
      console.error(`${sig}: stopping the lab`);
      down();
      fs.rmSync(tmp, { recursive: true, force: true });
      process.exit(1);
    });
  }
  let context, failure = null;
  const pageErrors = [];
  try {
    log(`lab on base port ${base} (${process.env.COUNTERD_BIN || 'build/counterd'})`);
    lab('up', base, 30000);
    context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), {
      executablePath: CHROMIUM, headless: true, timeout: 20000,
      viewport: { width: 1200, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(10000);
    page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // The browser logs every non-2xx answer; the API's errors are expected, JS errors are not.
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text());
    });
    let timer;
    const budget = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`over the ${BUDGET_MS / 1000} s budget`)), BUDGET_MS - (Date.now() - t0));
    });
    try {
      await Promise.race([scenario(page, gw, shots), budget]);
    } finally {
      clearTimeout(timer);
    }
    assert.deepEqual(pageErrors, [], 'no JavaScript errors in the page');
  } catch (e) {
    failure = e;
  } finally {
    if (context) await context.close().catch(() => {});
    down();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  // Under the sanitizer binary, the services' logs must be clean.
  const logs = path.join(ROOT, '.lab', String(base), 'logs');
  for (const f of fs.existsSync(logs) ? fs.readdirSync(logs) : []) {
    const t = fs.readFileSync(path.join(logs, f), 'utf8');
    if (/ERROR: AddressSanitizer|runtime error:|LeakSanitizer/.test(t) && !failure) {
      failure = new Error(`sanitizer report in ${path.join(logs, f)}:\n${t.slice(-3000)}`);
    }
  }
  if (failure) {
    console.error(`FAIL: ${failure.stack || failure.message}`);
    console.error(`lab state and logs kept in ${path.join(ROOT, '.lab', String(base))}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  fs.rmSync(path.join(ROOT, '.lab', String(base)), { recursive: true, force: true });
  log(`browser.dashboard passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshot ${shots.converged}`);
  console.log('1 passed, 0 failed');
}

main();
