// Real-browser test of the dashboard's namespaces and counter lifecycle: starts its own lab
// on free ports, makes a namespace and counts in it through the gateway's /v1 API, then in
// Debian's Chromium: picks the namespace (its type, retention, version and convergence
// shown; its counters listed), clears a counter with the confirmation (Cancel first:
// nothing is sent; then Clear: the region that cleared shows 0, and after a force-sync
// every region does), deletes one (after a force-sync its row is gone everywhere), counts
// in the namespace from the Increment form, creates a namespace with the form, and shows
// an API error's detail (a type change refused). Each of those steps within 2 s; nothing
// scrolls sideways at a phone's width.
// Always stops the lab. Bounded by BUDGET_MS.
//
//   node tests/browser/lifecycle_test.js    (tests/browser/run.sh lifecycle_test.js)
//   env: COUNTERD_BIN (the binary the lab runs), CHROMIUM, SCREENSHOT_DIR
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, log, freeBase, lab: labRun, until, browser, downOnSignal } = require('./lib');

const REGIONS = ['us-east', 'us-west', 'eu-west'];
const USABLE_MS = 2000;
const BUDGET_MS = 100000;
const NS = 'shop';
const t0 = Date.now();

// Replication only on demand (force-sync), so what the page shows is deterministic.
const lab = (cmd, base, timeoutMs) => labRun(cmd, base, timeoutMs,
  { SYNC_INTERVAL_MS: '600000', LAB_PROMETHEUS: '0', COUNTERD_WATCH: '0' });

// One call to the gateway from this process; fails on anything but the status wanted.
async function call(gw, method, p, body, want = 200) {
  const r = await fetch(`${gw}${p}`, { method, headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  assert.equal(r.status, want, `${method} ${p} answered ${r.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

async function scenario(page, gw, sent, shots) {
  const tid = (id) => page.getByTestId(id);
  const text = async (id) => ((await tid(id).textContent({ timeout: 2000 })) || '').trim();
  const rows = () => page.locator('#counters-body tr').evaluateAll((trs) => trs.map((t) => t.dataset.key));
  const times = [];
  // Runs act, then waits (every 20 ms) until ready; fails past USABLE_MS.
  const timed = async (what, act, ready) => {
    const t = Date.now();
    await act();
    await until(what, ready, USABLE_MS + 3000, 20);
    const ms = Date.now() - t;
    times.push(`${what} ${ms} ms`);
    assert.ok(ms <= USABLE_MS, `${what}: ${ms} ms (more than ${USABLE_MS})`);
    return ms;
  };
  const totals = (name, want) => async () => {
    const seen = [];
    for (const r of REGIONS) seen.push(await text(`counter-${name}-${r}`));
    return seen.every((v, i) => v === String(want[i])) || `${name}: ${JSON.stringify(seen)}`;
  };

  // ---- the namespace and its counters, through the API -----------------------------------
  const made = await call(gw, 'PUT', `/v1/namespaces/${NS}`, { type: 'eventual', ttl_seconds: 3600 });
  assert.equal(made.namespace, NS);
  await call(gw, 'POST', '/admin/force-sync');
  for (let i = 0; i < 5; i++) await call(gw, 'POST', `/v1/counters/${NS}/views/add`, { delta: 1 });
  await call(gw, 'POST', `/v1/counters/${NS}/sessions/add`, { delta: 2 });
  await call(gw, 'POST', '/admin/force-sync');
  log(`namespace ${NS} (eventual, ttl 3600 s, version ${made.version}): views 5, sessions 2, synced`);

  // ---- the page: default, then the namespace ------------------------------------------------
  const dialog = tid('confirm');
  await page.goto(`${gw}/`);
  await until('default described', async () => ((await text('ns-type')).startsWith('eventual') &&
    (await text('ns-ttl')) === 'never' && (await text('ns-converged')) === 'every region runs it') ||
    `${await text('ns-type')} / ${await text('ns-ttl')} / ${await text('ns-converged')}`);
  await until('the namespace offered', async () => (await tid('ns-select').locator('option')
    .evaluateAll((os) => os.map((o) => o.value))).join(',') === `default,${NS}` || 'not yet');
  // In default the listing holds every key: the namespace's counters as "shop/<name>", and
  // a row's confirmation names the counter and its namespace apart.
  await until('shop/views listed in default', async () => (await rows()).includes(`${NS}/views`) ||
    JSON.stringify(await rows()));
  await tid(`counter-${NS}/views-delete`).click();
  await until('the dialog for shop/views', async () => (await dialog.isVisible()) || 'no dialog');
  assert.match(await text('confirm-text'), /^Delete the counter views in namespace shop: /);
  await page.keyboard.press('Escape');
  await until('the dialog closed by Escape', async () => !(await dialog.isVisible()) || 'open');
  assert.match(await text('action-result'), /^Delete cancelled: views in shop is unchanged/);
  await timed(`pick ${NS}`, () => tid('ns-select').selectOption(NS), async () => {
    const k = await rows();
    if (k.join(',') !== 'sessions,views') return `rows ${JSON.stringify(k)}`;
    if (!(await text('ns-ttl')).startsWith('1 h')) return `ttl: ${await text('ns-ttl')}`;
    const views = await totals('views', [5, 5, 5])();
    return views === true ? totals('sessions', [2, 2, 2])() : views;
  });
  assert.match(await text('ns-type'), /^eventual: replicated/);
  assert.equal(await text('ns-window'), '10 min');
  assert.equal(await text('ns-version'), String(made.version));
  assert.equal(await text('ns-converged'), 'every region runs it');
  log(`ok: ${NS} picked: ${await text('ns-type')}; retention ${await text('ns-ttl')}; ` +
    `window ${await text('ns-window')}; version ${await text('ns-version')}, ${await text('ns-converged')}`);

  // ---- clear, with the confirmation: Cancel first --------------------------------------------
  await timed('the clear confirmation', () => tid('counter-views-clear').click(), async () =>
    (await dialog.isVisible()) || 'no dialog');
  const ask = await text('confirm-text');
  assert.ok(ask.includes('views') && ask.includes(NS) && ask.includes('the count restarts from 0 here') &&
    ask.includes('not seen yet survive'), `the dialog says: ${ask}`);
  await page.screenshot({ path: shots.confirm });
  await tid('confirm-cancel').click();
  await until('the dialog closed', async () => !(await dialog.isVisible()) || 'open');
  assert.match(await text('action-result'), /^Clear cancelled: views in shop is unchanged/);
  await page.waitForTimeout(1200); // a poll or more: still 5 everywhere, and nothing was sent
  assert.equal(await totals('views', [5, 5, 5])(), true);
  assert.deepEqual(sent.filter((s) => /\/clear$|DELETE/.test(s)), [], 'Cancel sent nothing');
  log(`ok: the dialog says "${ask}"; Cancel sends nothing and views stays 5`);

  // Then Clear: the region that cleared shows 0 at once, every region after a force-sync.
  await tid('counter-views-clear').click();
  await until('the dialog open', async () => (await dialog.isVisible()) || 'no dialog');
  let region = '';
  await timed('clear views', () => tid('confirm-ok').click(), async () => {
    const m = /^(\S+) cleared views in shop: it had counted 5, it now counts 0\b/.exec(await text('action-result'));
    if (!m) return await text('action-result');
    region = m[1];
    return (await text(`counter-views-${region}`)) === '0' || `views in ${region}: ${await text(`counter-views-${region}`)}`;
  });
  assert.ok(REGIONS.includes(region), `cleared by ${region}`);
  assert.deepEqual(sent.filter((s) => /\/clear$/.test(s)), [`POST /v1/counters/${NS}/views/clear`]);
  await timed('views 0 everywhere after a force-sync', () => tid('force-sync').click(), async () => {
    const ok = await totals('views', [0, 0, 0])();
    return ok === true ? ((await text('counter-views-agree')) === 'converged' || 'not converged') : ok;
  });
  log(`ok: cleared on ${region} (${await text('action-result')}); 0 and converged everywhere after a force-sync`);

  // ---- delete ----------------------------------------------------------------------------------
  await tid('counter-sessions-delete').click();
  await until('the delete dialog', async () => (await dialog.isVisible()) || 'no dialog');
  const askDel = await text('confirm-text');
  assert.ok(askDel.includes('sessions') && askDel.includes(NS) &&
    askDel.includes('the counter disappears everywhere; counting it again starts from 0'), askDel);
  await timed('delete sessions', () => tid('confirm-ok').click(), async () =>
    /^\S+ deleted sessions in shop: gone from its reads/.test(await text('action-result')) ||
    await text('action-result'));
  await timed('sessions gone after a force-sync', () => tid('force-sync').click(), async () => {
    const k = await rows();
    return (k.join(',') === 'views') || `rows ${JSON.stringify(k)}`;
  });
  await call(gw, 'GET', `/v1/counters/${NS}/sessions`, null, 404);
  log('ok: sessions deleted: its row is gone from the page, and GET answers 404');

  // ---- count in the namespace from the page --------------------------------------------------
  await tid('inc-name').fill('views');
  await tid('inc-amount').fill('4');
  await timed('increment views in shop', () => tid('inc-submit').click(), async () =>
    /^Counted in shop by \S+ \(.+\): \S+ now counts 4 for views\.$/.test(await text('inc-result')) ||
    await text('inc-result'));
  log(`ok: ${await text('inc-result')}`);

  // ---- a namespace made with the form; an error's detail ------------------------------------
  await tid('ns-new').locator('summary').click();
  await tid('ns-name').fill('trial');
  await tid('ns-type-new').selectOption('regional');
  await tid('ns-ttl-new').fill('60');
  await timed('create trial', () => tid('ns-submit').click(), async () => {
    if (await tid('ns-select').inputValue() !== 'trial') return `picked ${await tid('ns-select').inputValue()}`;
    return ((await text('ns-type')).startsWith('regional') && (await text('ns-ttl')).startsWith('1 min')) ||
      `${await text('ns-type')} / ${await text('ns-ttl')}`;
  });
  assert.match(await text('ns-result'), /^Namespace trial saved on \S+: regional, retention 1 min, version \d+/);
  await until('an empty trial said so', async () => (await text('counters-empty').catch(() => '')) ===
    'No counters in trial yet: increment one.' || await text('list-info'));
  await tid('ns-name').fill(NS);
  await timed('a type change refused', () => tid('ns-submit').click(), async () =>
    ((await tid('error').isVisible()) && /409 type_change/.test(await text('error-text'))) ||
    await text('error-text'));
  log(`ok: trial created with the form (${await text('ns-type')}); a type change: ${await text('error-text')}`);
  await page.screenshot({ path: shots.page, fullPage: true });
  // A phone's width: the namespace's description and the row buttons fit.
  await page.setViewportSize({ width: 390, height: 844 });
  await tid('ns-select').selectOption(NS);
  await until('views listed at 390 px', async () => (await rows()).join(',') === 'views' || 'not yet');
  const [sw, iw] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
  assert.ok(sw <= iw, `390x844: the page scrolls sideways (${sw} px wide in ${iw})`);
  await page.screenshot({ path: shots.narrow, fullPage: true });
  log(`ok: at 390x844 nothing scrolls sideways; ${times.join(', ')}`);
}

async function main() {
  const base = await freeBase();
  const gw = `http://127.0.0.1:${base + 80}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'counterd-lifecycle-'));
  const shotDir = process.env.SCREENSHOT_DIR || os.tmpdir();
  fs.mkdirSync(shotDir, { recursive: true });
  const shots = { confirm: path.join(shotDir, 'lifecycle-confirm.png'), page: path.join(shotDir, 'lifecycle.png'),
    narrow: path.join(shotDir, 'lifecycle-390.png') };
  const down = () => {
    try { lab('down', base, 40000); } catch (e) { console.error(e.message); }
  };
  downOnSignal(down, tmp);
  let context, failure = null;
  const pageErrors = [], sent = [];
  try {
    log(`lab on base port ${base} (${process.env.COUNTERD_BIN || 'build/counterd'})`);
    lab('up', base, 30000);
    context = await browser(path.join(tmp, 'profile'));
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(10000);
    page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text());
    });
    // What the page sends that changes a counter (Cancel must send nothing).
    page.on('request', (req) => {
      const u = new URL(req.url());
      if (req.method() !== 'GET' && u.pathname.startsWith('/v1/counters/')) sent.push(`${req.method()} ${u.pathname}`);
    });
    let timer;
    const budget = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`over the ${BUDGET_MS / 1000} s budget`)), BUDGET_MS - (Date.now() - t0));
    });
    try {
      await Promise.race([scenario(page, gw, sent, shots), budget]);
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
  log(`browser.lifecycle passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshots in ${shotDir}`);
  console.log('1 passed, 0 failed');
}

main();
