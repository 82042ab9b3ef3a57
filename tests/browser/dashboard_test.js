// Real-browser test of the dashboard (web/): starts its own lab on free ports, with an
// admin token, drives the page in Debian's Chromium through playwright-core, and checks
// what a person would see: healthy regions, an increment and where it went, the admin
// token asked for on 401 and then used, a partition and the divergence it causes, heal +
// force-sync and convergence (lag 0) with the per-node vectors and the sync lag, a region
// that stops answering shown as unreachable while the page keeps working, search by name
// prefix and pages (next, previous), an empty table that says why (nothing matches, no
// region answers: never "no counters yet" then), the comparison
// run (against the lab's strong service) with its chart and numbers, and the rate chart
// following a load. Checks the layout at 1280x800 and at a phone's width. Always
// stops the lab. Bounded by BUDGET_MS.
//
//   node tests/browser/dashboard_test.js      (tests/browser/run.sh installs what it needs)
//   env: COUNTERD_BIN (the binary the lab runs), CHROMIUM (default /usr/bin/chromium),
//        SCREENSHOT_DIR (default the system temp folder; ctest gives the build tree's),
//        README_SCREENSHOT (a path, relative to the repository: also save the whole page,
//        1280 wide, there while the load runs, e.g. docs/dashboard.png)
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, log, sleep, freeBase, lab: labRun, labPid, until, browser, downOnSignal } = require('./lib');

const REGIONS = ['us-east', 'us-west', 'eu-west'];
const BUDGET_MS = 150000;
const TOKEN = crypto.randomBytes(12).toString('hex');
const t0 = Date.now();

// Replication only on demand (force-sync), so what the page shows is deterministic.
const lab = (cmd, base, timeoutMs) => labRun(cmd, base, timeoutMs,
  { SYNC_INTERVAL_MS: '600000', COUNTERD_ADMIN_TOKEN: TOKEN });

// Increments through the API from this process (not the page) until stopped; counts what
// was acknowledged, with the time of each, so the page's rate can be checked against it.
function load(gw, name, amount) {
  const acks = [];
  let stop = false;
  const done = (async () => {
    while (!stop) {
      const r = await fetch(`${gw}/api/increment`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ counter_name: name, amount, routing: 'round-robin' }),
      });
      await r.text();
      if (r.ok) acks.push(Date.now());
      await sleep(20);
    }
  })();
  return {
    perSecond: (ms) => (acks.filter((t) => t >= Date.now() - ms).length * amount * 1000) / ms,
    stop: async () => { stop = true; await done; },
  };
}

async function scenario(page, gw, base, shots, sigs) {
  const tid = (id) => page.getByTestId(id);
  const text = async (id) => ((await tid(id).textContent({ timeout: 2000 })) || '').trim();
  const apiStatus = async () => (await fetch(`${gw}/api/status`)).json();
  const noSideScroll = async (what) => {
    const [sw, iw] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
    assert.ok(sw <= iw, `${what}: the page scrolls sideways (${sw} px wide in ${iw})`);
  };
  // Waits until the counters table shows these totals and this convergence lag.
  const totals = (name, want, lag) => until(`counter ${name} at ${JSON.stringify(want)}, lag ${lag}`, async () => {
    const seen = {};
    for (const r of REGIONS) seen[r] = await text(`counter-${name}-${r}`);
    const l = await text(`counter-${name}-lag`), a = await text(`counter-${name}-agree`);
    const good = REGIONS.every((r) => seen[r] === String(want[r])) && l === String(lag) &&
      a.startsWith(lag === 0 ? 'converged' : 'diverged');
    return good || `${JSON.stringify(seen)} lag: ${l} ${a}`;
  });
  const vector = async (name, region) => (await tid(`counter-${name}-${region}-nodes`).locator('li').allTextContents())
    .map((s) => s.trim());
  const partitionSwitch = (r) => page.getByRole('switch', { name: `Partition ${r}` });

  // ---- the page, healthy ---------------------------------------------------------------
  await page.goto(`${gw}/`);
  assert.equal(await page.title(), 'counterd dashboard');
  await until('three healthy regions', async () => {
    for (const r of REGIONS) {
      const s = await text(`region-${r}-status`);
      if (s !== 'healthy') return `${r}: ${s}`;
      if (await text(`region-${r}-node`) !== `${r}-1`) return `${r}: node id`;
      if (await partitionSwitch(r).getAttribute('aria-checked') !== 'false') return `${r}: switch`;
    }
    return (await text('live')).startsWith('Live') || 'not live';
  });
  // Every form control has a label, every button a name (what a screen reader announces).
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, button')]
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
    .map((e) => e.outerHTML.slice(0, 80)));
  assert.deepEqual(unnamed, [], 'controls without a label');
  await noSideScroll('1280x800');
  log('ok: three regions healthy with their node ids; every control is labelled; fits 1280x800');

  // An API error is shown with its detail.
  await tid('inc-name').fill('not a valid name!');
  await page.getByRole('button', { name: 'Increment' }).click();
  await until('the bad_name error', async () => {
    const t = await text('error-text');
    return (await tid('error').isVisible() && /bad_name/.test(t) && /1-200 bytes/.test(t)) || t;
  });
  log(`ok: the API's error is shown: ${await text('error-text')}`);

  // ---- an increment through the page ---------------------------------------------------
  const name = 'pageviews';
  await page.getByLabel('Counter', { exact: true }).first().fill(name);
  await tid('inc-amount').fill('3');
  await tid('inc-routing').selectOption('random');
  await tid('inc-submit').click();
  const [routed] = await until('the routed region', async () => {
    const r = await text('inc-routed').catch(() => '');
    return REGIONS.includes(r) ? [r] : `routed: ${r}`;
  });
  assert.match(await text('inc-latency'), /^\d+(\.\d+)? ms$/);
  assert.equal(await tid('error').isVisible(), false, 'a success clears the error');
  await totals(name, Object.fromEntries(REGIONS.map((r) => [r, r === routed ? 3 : 0])), 3);
  assert.deepEqual(await vector(name, routed), [`${routed}-1: 3`]);
  for (const r of REGIONS.filter((x) => x !== routed)) {
    assert.deepEqual(await vector(name, r), [`${routed}-1: 0 ▾`], `${r} shows ${routed}-1 behind`);
  }
  log(`ok: increment of 3 routed to ${routed} (${await text('inc-latency')}); counted there, vector ` +
    `{${routed}-1: 3}, the others behind, lag 3`);

  // ---- the admin token ---------------------------------------------------------------------
  assert.equal(await text('token-state'), 'none');
  await tid('force-sync').click();
  await until('the 401 explained', async () => {
    const t = await text('error-text');
    return (/needs the admin token/.test(t) && /401/.test(t) && /COUNTERD_ADMIN_TOKEN/.test(t)) || t;
  });
  assert.equal(await tid('token-box').getAttribute('open'), '', 'the token field is opened');
  await until('focus in the token field', async () =>
    (await page.evaluate(() => document.activeElement && document.activeElement.id)) === 'token-input');
  await totals(name, Object.fromEntries(REGIONS.map((r) => [r, r === routed ? 3 : 0])), 3);
  log(`ok: force-sync without the token: ${await text('error-text')}`);

  await tid('token-input').fill('wrong-token');
  await tid('token-save').click();
  await tid('force-sync').click();
  await until('a wrong token explained', async () => /not the gateway's/.test(await text('error-text')) ||
    await text('error-text'));
  await tid('token-input').fill(TOKEN);
  await tid('token-save').click();
  assert.equal(await text('token-state'), 'set');
  await page.reload();
  await until('the token kept across a reload', async () => (await text('token-state')) === 'set');
  await tid('inc-name').fill(name); // the reload reset the form
  assert.equal(await page.evaluate(() => localStorage.getItem('counterd.adminToken')), TOKEN);
  await tid('force-sync').click();
  await totals(name, { 'us-east': 3, 'us-west': 3, 'eu-west': 3 }, 0);
  assert.match(await text('admin-result'), /^Force sync done/);
  assert.equal(await tid('error').isVisible(), false);
  for (const r of REGIONS) assert.deepEqual(await vector(name, r), [`${routed}-1: 3`]);
  // Sync lag: now - last_sync_time, just after the sync and then growing.
  const lagSeconds = async (r) => {
    const t = await text(`region-${r}-sync-lag`);
    if (t === 'just now') return 0;
    const m = /^(\d+(?:\.\d+)?) s ago$/.exec(t);
    return m ? Number(m[1]) : t;
  };
  for (const r of REGIONS) {
    const l = await lagSeconds(r);
    assert.ok(typeof l === 'number' && l < 5, `${r} synced just now (shows ${l})`);
  }
  await until('the sync lag growing', async () => {
    const l = await lagSeconds('us-west');
    return (typeof l === 'number' && l >= 2) || `us-west: ${l}`;
  });
  log('ok: a 401 names the token; wrong token explained; saved token survives a reload; ' +
    'force-sync converges (3 everywhere, lag 0); sync lag restarts from 0 and grows');

  // ---- partition us-east through the page; the API agrees --------------------------------
  await partitionSwitch('us-east').click();
  await until('us-east marked partitioned', async () =>
    (await text('region-us-east-status')) === 'partitioned' || await text('region-us-east-status'));
  assert.equal(await partitionSwitch('us-east').getAttribute('aria-checked'), 'true');
  assert.equal(await partitionSwitch('us-west').getAttribute('aria-checked'), 'false');
  const st = await apiStatus();
  assert.equal(st.regions['us-east'].network_partition, true);
  assert.equal(st.regions['us-west'].network_partition, false);
  log('ok: us-east shows partitioned (switch on), and GET /api/status agrees');

  // An increment in the partitioned region: the regions diverge, even after a force-sync.
  await tid('inc-amount').fill('5');
  await tid('inc-routing').selectOption('us-east');
  await tid('inc-submit').click();
  await until('routed to us-east', async () => (await text('inc-result')).includes('us-east now counts 8'));
  await totals(name, { 'us-east': 8, 'us-west': 3, 'eu-west': 3 }, 5);
  assert.match(await tid(`counter-row-${name}`).getAttribute('class'), /diverged/);
  await tid('force-sync').click();
  await until('the force-sync answer', async () => (await text('admin-result')).startsWith('Force sync done'));
  await sleep(1200);
  await totals(name, { 'us-east': 8, 'us-west': 3, 'eu-west': 3 }, 5);
  await page.screenshot({ path: shots.diverged, fullPage: true });
  log('ok: divergence shown (us-east 8, the others 3, lag 5) and the partition holds through force-sync');

  // ---- heal, force-sync, convergence -------------------------------------------------------
  await partitionSwitch('us-east').click();
  await until('us-east healed', async () => (await text('region-us-east-status')) === 'healthy');
  assert.equal(await partitionSwitch('us-east').getAttribute('aria-checked'), 'false');
  assert.equal((await apiStatus()).regions['us-east'].network_partition, false);
  await tid('force-sync').click();
  await totals(name, { 'us-east': 8, 'us-west': 8, 'eu-west': 8 }, 0);
  const wantVec = routed === 'us-east' ? ['us-east-1: 8'] : ['us-east-1: 5', `${routed}-1: 3`];
  for (const r of REGIONS) assert.deepEqual(await vector(name, r), wantVec, `${r}'s vector`);
  log(`ok: after heal + force-sync every region counts 8, lag 0, vector ${JSON.stringify(wantVec)}`);

  // ---- a region that stops answering ------------------------------------------------------
  // SIGSTOP: the worst kind of down (connections hang until the coordinator's 2 s timeout).
  const westPid = labPid(base, 'us-west');
  assert.ok(westPid, 'the lab has a pid for us-west');
  process.kill(westPid, 'SIGSTOP');
  sigs.stopped = [westPid];
  await until('us-west unreachable', async () => (await text('region-us-west-status')) === 'unreachable' ||
    await text('region-us-west-status'), 15000);
  await until('us-west without an answer in the table', async () => (await text(`counter-${name}-us-west`)) === 'no answer');
  await tid('inc-amount').fill('2');
  await tid('inc-routing').selectOption('eu-west');
  const tClick = Date.now();
  await tid('inc-submit').click();
  await until('routed to eu-west', async () => (await text('inc-result')).includes('eu-west now counts 10'));
  const took = Date.now() - tClick;
  assert.ok(took < 1500, `an increment with us-west down answered in ${took} ms`);
  await until('eu-west 10 on the page', async () => (await text(`counter-${name}-eu-west`)) === '10');
  assert.match(await text(`counter-${name}-agree`), /^diverged \(2 of 3 answering\)$/);
  assert.match(await text('live'), /^Live/);
  await page.screenshot({ path: shots.unreachable, fullPage: true });
  process.kill(westPid, 'SIGCONT');
  sigs.stopped = [];
  await until('us-west back', async () => (await text('region-us-west-status')) === 'healthy', 15000);
  await tid('force-sync').click();
  await totals(name, { 'us-east': 10, 'us-west': 10, 'eu-west': 10 }, 0);
  log(`ok: us-west stopped shows unreachable / no answer; the page stays live and an increment ` +
    `answers in ${took} ms; back and converged at 10`);

  // ---- search by prefix; an empty table says why ---------------------------------------------
  const listed = () => page.locator('#counters-body tr').evaluateAll((trs) => trs.map((t) => t.dataset.key));
  await tid('search').fill('page');
  await tid('search').press('Enter');
  await until('only pageviews listed', async () => {
    const keys = await listed(), info = await text('list-info'); // the rows of this search
    return (keys.length === 1 && keys[0] === name && /^Counters starting with "page" 1–1 of 1\b/.test(info)) ||
      `${JSON.stringify(keys)} ${info}`;
  });
  assert.equal(await tid('page-next').isDisabled(), true, 'one page: no next');
  assert.equal(await tid('page-prev').isDisabled(), true, 'first page: no previous');
  await tid('search').fill('zzz');
  await until('nothing starts with zzz', async () => (await text('counters-empty').catch(() => '')) ===
    'No counter name starts with "zzz".' || await text('list-info'));
  await tid('search').fill('bad name!');
  await until('a bad search explained', async () => (await text('list-info')).startsWith(
    '"bad name!" is not searched: counter names are made of') || await text('list-info'));
  await sleep(1200); // the next polls keep saying so
  assert.match(await text('list-info'), /^"bad name!" is not searched: .* the list still shows "zzz"/);
  assert.equal(await tid('search').getAttribute('aria-invalid'), 'true');
  // Pages: 250 counters (sent to each region as a peer would), 100 a page.
  const bulk = (i) => `zbulk.${String(i).padStart(3, '0')}`;
  const counts = Object.fromEntries(Array.from({ length: 250 }, (_, i) => [bulk(i), { 'bulk-1': 1 }]));
  for (let i = 0; i < REGIONS.length; i++) {
    const r = await fetch(`http://127.0.0.1:${base + 1 + i}/sync`, { method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ node_id: 'bulk-1', incarnation: 'b1', timestamp: 1, features: ['folded'], counts }) });
    assert.equal(r.status, 200, `POST /sync: ${await r.text()}`);
  }
  const pageOf = (first, last, info) => until(`rows ${first}..${last}`, async () => {
    const keys = await listed();
    const ok = keys[0] === first && keys[keys.length - 1] === last && (await text('list-info')).startsWith(info);
    return ok || `${keys[0]}..${keys[keys.length - 1]}: ${await text('list-info')}`;
  });
  await tid('search').fill('zbulk.');
  await tid('search').press('Enter');
  await pageOf(bulk(0), bulk(99), 'Counters starting with "zbulk." 1–100 of 250');
  await tid('page-next').click();
  await pageOf(bulk(100), bulk(199), 'Counters starting with "zbulk." 101–200 of 250');
  await tid('page-next').click();
  await pageOf(bulk(200), bulk(249), 'Counters starting with "zbulk." 201–250 of 250');
  assert.equal(await tid('page-next').isDisabled(), true, 'the last page: no next');
  await tid('page-prev').click();
  await pageOf(bulk(100), bulk(199), 'Counters starting with "zbulk." 101–200 of 250');
  await tid('page-prev').click();
  await pageOf(bulk(0), bulk(99), 'Counters starting with "zbulk." 1–100 of 250');
  assert.equal(await tid('page-prev').isDisabled(), true, 'the first page: no previous');
  // The hot view (top by rate) and the diverged one (top by lag): every region converged.
  const topKeys = () => page.locator('#top-body tr').evaluateAll((trs) => trs.map((t) => t.dataset.key));
  await tid('view-hot').click();
  await until('pageviews the hottest', async () => (await topKeys())[0] === name || JSON.stringify(await topKeys()));
  assert.match(await text(`top-${name}-rate`), /^\d+(\.\d+)?\/min$/);
  assert.equal(await tid('search').isVisible(), false, 'no search in a top view');
  await tid(`top-row-${name}`).getByRole('button', { name }).click(); // to its row in every region
  await until(`${name} searched`, async () => {
    const keys = await listed();
    return (keys.length === 1 && keys[0] === name && await tid('view-all').getAttribute('aria-pressed') === 'true' &&
      await tid('search').inputValue() === name) || JSON.stringify(keys);
  });
  await tid('view-diverged').click();
  await until('no diverged counter', async () => (await text('top-empty').catch(() => '')).startsWith(
    'No diverged counter') || JSON.stringify(await topKeys()));
  await tid('view-all').click();
  await tid('search').fill('');
  await tid('search').press('Enter');
  await until('every counter listed again', async () => ((await listed()).includes(name) &&
    /^Counters 1–/.test(await text('list-info'))) || await text('list-info'));
  // Every region stopped: the table says the regions do not answer, never "no counters yet".
  const regionPids = REGIONS.map((r) => labPid(base, r));
  for (const pid of regionPids) process.kill(pid, 'SIGSTOP');
  sigs.stopped = regionPids;
  await until('no region answers', async () => /^No region answers \(0 of 3\)/.test(
    await text('counters-empty').catch(() => '')) || await text('list-info'), 15000);
  for (const pid of regionPids) process.kill(pid, 'SIGCONT');
  sigs.stopped = [];
  await until('the counters back', async () => (await listed()).includes(name) || 'not yet', 15000);
  await until('three healthy regions again', async () => {
    for (const r of REGIONS) if ((await text(`region-${r}-status`)) !== 'healthy') return r;
    return true;
  }, 15000);
  log('ok: search by prefix lists what matches, says when nothing does; 250 counters in three ' +
    'pages, next and previous; hot and diverged views; with every region stopped the table says ' +
    'no region answers');

  // ---- the comparison ---------------------------------------------------------------------
  assert.ok(labPid(base, 'strong'), 'the lab runs the strong service');
  await tid('cmp-iterations').fill('20');
  const answer = page.waitForResponse((r) => r.url().endsWith('/api/compare'), { timeout: 60000 });
  await page.getByRole('button', { name: 'Run comparison' }).click();
  const res = await answer;
  assert.equal(res.status(), 200, `POST /api/compare answered ${res.status()}: ${await res.text()}`);
  const r = await res.json();
  await until('the comparison shown', async () => tid('cmp-result').isVisible());
  assert.equal(await text('cmp-conclusion'), r.conclusion);
  assert.match(r.conclusion, /faster|slower/);
  assert.equal(await text('cmp-speedup'), `${r.speedup}×`);
  assert.equal(await text('cmp-iter'), '20');
  for (const [side, key] of [['eventual', 'eventual_consistency'], ['strong', 'strong_consistency']]) {
    for (const s of ['avg', 'p50', 'p99', 'min', 'max']) {
      assert.equal(await text(`cmp-${side}-${s}`), String(r[key][`${s}_ms`]), `${side} ${s}`);
    }
  }
  // The bars are drawn to scale: their widths keep the ratio of the values.
  const w99 = Number(await tid('cmp-bar-strong-p99').getAttribute('width'));
  for (const s of ['avg', 'p50', 'p99']) {
    const ws = Number(await tid(`cmp-bar-strong-${s}`).getAttribute('width'));
    const want = w99 * (r.strong_consistency[`${s}_ms`] / r.strong_consistency.p99_ms);
    assert.ok(Math.abs(ws - want) <= 1, `strong ${s}: ${ws} px, ${want.toFixed(1)} px to scale with p99`);
  }
  for (const s of ['avg', 'p50', 'p99']) {
    const we = Number(await tid(`cmp-bar-eventual-${s}`).getAttribute('width'));
    const ws = Number(await tid(`cmp-bar-strong-${s}`).getAttribute('width'));
    const ve = r.eventual_consistency[`${s}_ms`], vs = r.strong_consistency[`${s}_ms`];
    assert.ok(ws > 1, `${s}: the strong bar is drawn (${ws} px for ${vs} ms)`);
    if (we > 1) { // a bar under 1 px is drawn 1 px wide
      assert.ok(Math.abs(ws / we - vs / ve) <= 0.02 * (vs / ve), `${s}: bars ${we} and ${ws} px for ${ve} and ${vs} ms`);
    }
  }
  log(`ok: comparison shown: ${r.conclusion}; eventual avg ${r.eventual_consistency.avg_ms} ms, ` +
    `strong avg ${r.strong_consistency.avg_ms} ms, bars to scale`);

  // ---- the rate chart follows a load ---------------------------------------------------------
  const gen = load(gw, 'load', 2);
  try {
    const allLine = () => tid('rate-line-all').getAttribute('points');
    await until('the rate up', async () => Number((await text('rate-now')).replace(/,/g, '')) > 5 ||
      await text('rate-now'), 15000);
    await sleep(1500); // steady load
    // The page's rate, read over 3 s, against what the load had acknowledged in those 3 s.
    const reads = [];
    for (let i = 0; i < 6; i++) {
      reads.push(Number((await text('rate-now')).replace(/,/g, '')));
      await sleep(500);
    }
    const seen = Number((reads.reduce((a, b) => a + b) / reads.length).toFixed(1));
    const sent = gen.perSecond(3000);
    assert.ok(seen > sent * 0.7 && seen < sent * 1.4, `the page shows ${seen}/s while the load sends ${sent}/s`);
    const p1 = await allLine();
    await sleep(1500);
    assert.notEqual(await allLine(), p1, 'the rate line moves');
    for (const r of REGIONS) {
      assert.ok(Number(await tid(`rate-line-${r}`).count()) === 1, `a line for ${r}`);
    }
    const legend = await tid('rate-chart').locator('.legend li').allTextContents();
    for (const r of REGIONS) {
      const li = legend.find((t) => t.includes(r));
      assert.ok(li && !/ 0\/s$/.test(li.trim()), `round-robin reaches ${r}: ${li}`);
    }
    log(`ok: rate chart moves: ${seen}/s shown while the load sends ${sent.toFixed(1)}/s (amount 2), ` +
      'every region\'s line above 0');
    await page.screenshot({ path: shots.wide, fullPage: true });
    if (process.env.README_SCREENSHOT) { // the whole page, 1280 wide
      const to = path.resolve(ROOT, process.env.README_SCREENSHOT);
      await page.screenshot({ path: to, fullPage: true });
      log(`saved ${to}`);
    }
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(300);
    await noSideScroll('390x844');
    const cell = tid(`counter-${name}-us-west`).locator('xpath=..');
    assert.equal(await cell.evaluate((e) => getComputedStyle(e, '::before').content), '"us-west"',
      'narrow: each counter cell is labelled by its region');
    await page.screenshot({ path: shots.narrow, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    log('ok: at 390x844 nothing scrolls sideways and the counters become labelled cards');
  } finally {
    await gen.stop();
  }
  await until('the rate back to 0', async () => (await text('rate-now')) === '0' || await text('rate-now'));
  log('ok: the rate returns to 0 when the load stops');

  await tid('heal-all').click();
  await until('heal all answered', async () => /All regions healed \(3 updated\)/.test(await text('admin-result')));
  await page.screenshot({ path: shots.converged, fullPage: true });
  log(`ok: heal all; screenshots in ${path.dirname(shots.converged)}`);
}

async function main() {
  const base = await freeBase();
  const gw = `http://127.0.0.1:${base + 80}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'counterd-browser-'));
  const shotDir = process.env.SCREENSHOT_DIR || os.tmpdir();
  fs.mkdirSync(shotDir, { recursive: true });
  const shot = (what) => path.join(shotDir, `dashboard-${what}.png`);
  const shots = { diverged: shot('diverged'), unreachable: shot('unreachable'), wide: shot('1280'),
    narrow: shot('390'), converged: shot('converged') };
  const sigs = { stopped: [] }; // services this test SIGSTOPped, to resume before stopping
  const down = () => {
    for (const pid of sigs.stopped) { try { process.kill(pid, 'SIGCONT'); } catch (_) { /* gone */ } }
    try { lab('down', base, 40000); } catch (e) { console.error(e.message); } // <= 5 s a service
  };
  downOnSignal(down, tmp);
  let context, failure = null;
  const pageErrors = [];
  try {
    log(`lab on base port ${base} (${process.env.COUNTERD_BIN || 'build/counterd'}), with an admin token`);
    lab('up', base, 30000);
    context = await browser(path.join(tmp, 'profile'));
    const page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(10000);
    page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // The browser logs every non-2xx answer; the API's errors are expected, JS errors are not.
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text());
    });
    // Nothing but the gateway: no CDN, no other host.
    page.on('request', (req) => {
      if (!req.url().startsWith(`${gw}/`)) pageErrors.push(`request outside the gateway: ${req.url()}`);
    });
    let timer;
    const budget = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`over the ${BUDGET_MS / 1000} s budget`)), BUDGET_MS - (Date.now() - t0));
    });
    try {
      await Promise.race([scenario(page, gw, base, shots, sigs), budget]);
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
  log(`browser.dashboard passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshots in ${shotDir}`);
  console.log('1 passed, 0 failed');
}

main();
