// counterd dashboard: polls the gateway that serves it (same origin) once a second and
// drives its API. Plain DOM, no framework; elements are created once per key (region,
// counter) and updated in place, so focus and clicks survive the refreshes. The two
// charts are SVG drawn here. Admin calls carry the admin token kept in localStorage.
'use strict';

const POLL_MS = 1000;
const WINDOW_S = 60; // the rate chart's time span
const ORDER = ['us-east', 'us-west', 'eu-west']; // the lab's order; other regions follow
const TOKEN_KEY = 'counterd.adminToken';
const SVG_NS = 'http://www.w3.org/2000/svg';
// Okabe-Ito colours (told apart with colour blindness too); each series also has a dash.
const SERIES = [
  { color: '#0072b2', dash: '' }, { color: '#d55e00', dash: '6 3' },
  { color: '#009e73', dash: '2 3' }, { color: '#cc79a7', dash: '8 3 2 3' },
];

const $ = (id) => document.getElementById(id);
const state = {
  regions: [], status: null, counters: null, busy: false, again: false,
  known: new Map(), // "counter\nnode" -> that node's last known contribution (rate chart)
  sum: { total: 0, by: {} }, history: [], lastSet: '', // running sums {t, total, by: {region}}
  samples: [], // rate points {t, total, by: {region: rate}}
  nodeIds: {}, // region -> its node id, as last seen (kept while it does not answer)
  pending: new Set(), // regions whose partition switch has a call in flight
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

// One child of parent per key (data-key), created by make() the first time.
function keyed(parent, key, make) {
  for (const c of parent.children) if (c.dataset.key === key) return c;
  const c = make();
  c.dataset.key = key;
  parent.append(c);
  return c;
}

function prune(parent, keys) {
  for (const c of [...parent.children]) if (!keys.includes(c.dataset.key)) c.remove();
}

function setText(e, text, cls) {
  if (e.textContent !== String(text)) e.textContent = text;
  if (cls !== undefined && e.className !== cls) e.className = cls;
}

// Counts are signed 64-bit: integers past 2^53 are read exactly, as BigInt (where the
// browser gives a JSON reviver the source text). Arithmetic on counts goes through these
// helpers so that BigInt and Number mix; comparisons (< and >) already do.
const exact = (k, v, ctx) => (typeof v === 'number' && !Number.isSafeInteger(v) && ctx &&
  /^-?\d+$/.test(ctx.source) ? BigInt(ctx.source) : v);
const big = (x) => typeof x === 'bigint' || (typeof x === 'number' && !Number.isSafeInteger(x));
const minus = (a, b) => (big(a) || big(b) ? BigInt(a) - BigInt(b) : a - b);
const maxOf = (xs) => xs.reduce((m, x) => (x > m ? x : m));
const minOf = (xs) => xs.reduce((m, x) => (x < m ? x : m));
const same = (a, b) => String(a) === String(b);

function byOrder(a, b) {
  const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
  if (ia !== ib) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}

// A rate or latency with a sensible number of digits.
function num(x) {
  const a = Math.abs(x);
  if (a >= 100) return Math.round(x).toLocaleString('en-US');
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(a === 0 ? 0 : 2);
}

function ago(seconds) {
  if (seconds < 1) return 'just now';
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s ago`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min ago`;
}

// ---- the admin token -------------------------------------------------------------------

function token() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
}

function setToken(t) {
  try {
    if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    showError('This browser does not let the page keep the token (localStorage is off).');
  }
  showToken();
}

function showToken() {
  const t = token();
  setText($('token-state'), t ? 'set' : 'none', t ? 'ok' : '');
  if ($('token-input') !== document.activeElement) $('token-input').value = t;
}

// ---- calls -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(msg, status, code) {
    super(msg);
    this.status = status;
    this.code = code;
  }
}

// Calls the gateway; resolves to the JSON answer, or throws an ApiError whose message
// carries the API's {"error","detail"}. Admin paths carry the token when there is one.
async function api(method, path, body, opts = {}) {
  const ctl = new AbortController();
  const ms = opts.timeoutMs || (method === 'GET' ? 5000 : 40000);
  const timer = setTimeout(() => ctl.abort(), ms);
  const headers = Object.assign(body ? { 'Content-Type': 'application/json' } : {}, opts.headers);
  if (path.startsWith('/admin/') && token()) headers.Authorization = `Bearer ${token()}`;
  let res, text;
  try {
    res = await fetch(path, { method, body, headers, cache: 'no-store', signal: ctl.signal });
    text = await res.text();
  } catch (e) {
    throw new ApiError(`${method} ${path}: ` +
      (e.name === 'AbortError' ? `no answer in ${ms / 1000} s` : 'the gateway did not answer'), 0, '');
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try { data = text ? JSON.parse(text, exact) : null; } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const why = data && data.detail ? data.detail : (text || res.statusText);
    const code = data && data.error ? data.error : '';
    throw new ApiError(`${method} ${path} failed (${res.status}${code ? ` ${code}` : ''}): ${why}`,
      res.status, code);
  }
  return data;
}

function showError(msg) {
  setText($('error-text'), msg);
  $('error').hidden = !msg;
}

// A 401 means the gateway runs with an admin token: say so, and open the token field.
function explain(label, e) {
  if (e.status !== 401) return `${label}: ${e.message}`;
  $('token-box').open = true;
  $('token-input').focus();
  return token()
    ? `${label} was refused (401 unauthorized): the admin token saved here is not the ` +
      'gateway\'s. Enter the lab\'s COUNTERD_ADMIN_TOKEN under "Admin token" and try again.'
    : `${label} needs the admin token (401 unauthorized): this lab runs with ` +
      'COUNTERD_ADMIN_TOKEN. Enter it under "Admin token" at the top and try again.';
}

async function admin(label, path, describe) {
  try {
    const res = await api('POST', path);
    showError('');
    setText($('admin-result'), describe(res));
  } catch (e) {
    setText($('admin-result'), '');
    showError(explain(label, e));
  }
  refresh();
}

// ---- regions -----------------------------------------------------------------------------

function regionCard(name) {
  const t = (id) => `region-${name}-${id}`;
  return el('article', { class: 'region', 'data-testid': `region-${name}`, 'aria-labelledby': t('h') },
    el('div', { class: 'card-head' },
      el('h3', { id: t('h'), text: name }),
      el('span', { 'data-testid': t('status') })),
    el('dl', { class: 'kv' },
      el('div', {}, el('dt', { text: 'Node' }), el('dd', {}, el('code', { 'data-testid': t('node') }))),
      el('div', {}, el('dt', { text: 'Last sync' }), el('dd', { 'data-testid': t('sync-lag') })),
      el('div', {}, el('dt', { text: 'Counters' }), el('dd', { 'data-testid': t('counters') }))),
    el('button', {
      type: 'button', role: 'switch', class: 'switch', 'aria-checked': 'false',
      'aria-label': `Partition ${name}`, 'data-testid': `partition-${name}`,
      onclick: (ev) => partition(name, ev.currentTarget.getAttribute('aria-checked') !== 'true'),
    }, el('span', { class: 'track', 'aria-hidden': 'true' }, el('span', { class: 'thumb' })),
    el('span', { class: 'switch-text', text: 'Partition' })));
}

function renderRegions() {
  const st = state.status || { regions: {} };
  const cs = state.counters || { regions: {} };
  const box = $('regions');
  if (box.firstElementChild && !box.firstElementChild.dataset.key) box.replaceChildren();
  const names = [...new Set([...Object.keys(st.regions || {}), ...Object.keys(cs.regions || {})])]
    .sort(byOrder);
  if (!names.length) return;
  state.regions = names;
  const now = Date.now() / 1000;
  for (const name of names) {
    const s = (st.regions || {})[name] || {};
    const c = (cs.regions || {})[name];
    const card = keyed(box, name, () => regionCard(name));
    const q = (id) => card.querySelector(`[data-testid="region-${name}-${id}"]`);
    // Unreachable when the coordinator could not reach it in its latest status answer.
    const reachable = st.regions && name in st.regions ? s.status === 'healthy' : !!c;
    const cut = reachable && (s.network_partition === true || (c && c.network_partition === true));
    const word = !reachable ? 'unreachable' : cut ? 'partitioned' : 'healthy';
    setText(q('status'), word, `badge ${!reachable ? 'bad' : cut ? 'warn' : 'ok'}`);
    card.classList.toggle('down', !reachable);
    card.classList.toggle('cut', cut);
    const id = s.node_id || (c && c.node_id);
    if (id) state.nodeIds[name] = id;
    setText(q('node'), state.nodeIds[name] || '—');
    if (!c) {
      setText(q('sync-lag'), reachable ? '…' : 'unknown (no answer)', 'muted');
      setText(q('counters'), '–', 'muted');
    } else {
      const t = Number(c.last_sync_time);
      const lag = Math.max(0, now - t);
      setText(q('sync-lag'), t > 0 ? ago(lag) : 'never', t > 0 && lag < 30 ? '' : 'warn-text');
      q('sync-lag').title = t > 0 ? `sync lag ${lag.toFixed(1)} s (now − last_sync_time)` : '';
      setText(q('counters'), Object.keys(c.counters || {}).length);
    }
    const sw = card.querySelector(`[data-testid="partition-${name}"]`);
    sw.setAttribute('aria-checked', String(cut));
    setText(sw.querySelector('.switch-text'), cut ? 'Partitioned' : 'Partition');
    sw.disabled = state.pending.has(name);
  }
  prune(box, names);
  // The routing selector offers every region by name.
  const sel = $('inc-routing');
  for (const name of names) {
    if (![...sel.options].some((o) => o.value === name)) sel.append(el('option', { text: name }));
  }
}

async function partition(name, enabled) {
  state.pending.add(name);
  renderRegions();
  await admin(enabled ? `Partition ${name}` : `Heal ${name}`,
    `/admin/partition/${encodeURIComponent(name)}?enabled=${enabled}`,
    (r) => `${r.region || name} is ${r.network_partition ? 'partitioned: it neither sends nor accepts replication' : 'healed'}.`);
  state.pending.delete(name);
  renderRegions();
}

// ---- counters table --------------------------------------------------------------------

function renderCounters() {
  const all = state.counters;
  if (!all) return;
  const regions = [...new Set([...state.regions, ...Object.keys(all.regions || {})])].sort(byOrder);
  const head = $('counters-head');
  const want = ['Counter', ...regions, 'Convergence lag'];
  if ([...head.children].map((th) => th.textContent).join('|') !== want.join('|')) {
    head.replaceChildren(...want.map((t, i) =>
      el('th', { scope: 'col', text: t, class: i > 0 && i <= regions.length ? 'num' : '' })));
    $('counters-body').replaceChildren(); // columns changed: rebuild rows
  }
  const body = $('counters-body');
  const names = [...(all.counter_names || [])].sort();
  for (const name of names) {
    const row = keyed(body, name, () => el('tr', { 'data-testid': `counter-row-${name}` },
      el('th', { scope: 'row', text: name }),
      ...regions.map((r) => el('td', { class: 'num', 'data-label': r },
        el('span', { class: 'total', 'data-testid': `counter-${name}-${r}` }),
        el('ul', { class: 'vec', 'data-testid': `counter-${name}-${r}-nodes`, 'aria-label': `${name} in ${r}: nodes` }))),
      el('td', { 'data-label': 'Convergence lag' },
        el('span', { class: 'lag', 'data-testid': `counter-${name}-lag` }), ' ',
        el('span', { 'data-testid': `counter-${name}-agree` }))));
    const views = regions.map((r) => {
      const reg = all.regions && all.regions[r];
      if (!reg) return null; // that region did not answer
      return (reg.counters && reg.counters[name]) || { total_count: 0, nodes: {} };
    });
    const known = views.filter((v) => v !== null);
    const totals = known.map((v) => v.total_count);
    const max = totals.length ? maxOf(totals) : 0;
    const lag = totals.length ? minus(max, minOf(totals)) : null;
    // The freshest value of each node among the regions: an entry below it is behind.
    const top = {};
    for (const v of known) {
      for (const [n, c] of Object.entries(v.nodes || {})) if (!(n in top) || c > top[n]) top[n] = c;
    }
    // Nodes in region order (a node under its own region's name), then by name.
    const home = (n) => {
      const r = regions.find((x) => all.regions[x] && (all.regions[x].node_id === n ||
        n.startsWith(`${all.regions[x].node_id}~`)));
      return r ? regions.indexOf(r) : regions.length;
    };
    const nodeNames = Object.keys(top).sort((a, b) => home(a) - home(b) || (a < b ? -1 : a > b ? 1 : 0));
    regions.forEach((r, i) => {
      const v = views[i];
      const total = row.querySelector(`[data-testid="counter-${name}-${r}"]`);
      const vec = row.querySelector(`[data-testid="counter-${name}-${r}-nodes"]`);
      if (!v) {
        setText(total, 'no answer', 'total muted');
        vec.replaceChildren();
        return;
      }
      setText(total, v.total_count, v.total_count < max ? 'total behind' : 'total');
      const items = nodeNames.filter((n) => (v.nodes || {})[n] !== undefined || top[n] !== 0).map((n) => {
        const c = (v.nodes || {})[n];
        const behind = (c === undefined ? 0 : c) < top[n];
        return `${n}: ${c === undefined ? 0 : c}${behind ? ' ▾' : ''}`;
      });
      if ([...vec.children].map((li) => li.textContent).join('|') !== items.join('|')) {
        vec.replaceChildren(...items.map((t) => el('li', { text: t, class: t.endsWith('▾') ? 'behind' : '' })));
      }
    });
    const partial = known.length < regions.length;
    setText(row.querySelector(`[data-testid="counter-${name}-lag"]`), lag === null ? '–' : lag);
    // Converged as the coordinator says it: equal totals and equal vectors.
    const equal = known.every((v) => nodeNames.every((n) => (v.nodes || {})[n] === top[n]));
    const converged = lag !== null && same(lag, 0) && equal;
    setText(row.querySelector(`[data-testid="counter-${name}-agree"]`),
      lag === null ? 'no region answers' : `${converged ? 'converged' : 'diverged'}` +
        `${partial ? ` (${known.length} of ${regions.length} answering)` : ''}`,
      lag === null ? 'badge bad' : converged ? 'badge ok' : 'badge warn');
    row.classList.toggle('diverged', !converged);
  }
  prune(body, names);
  if (!names.length) {
    body.append(el('tr', { 'data-key': '' }, el('td', { colspan: String(want.length), class: 'muted',
      text: 'No counters yet: increment one.' })));
  }
}

// ---- increment rate --------------------------------------------------------------------

// One sample from /api/counters. Every (counter, node) contribution's change since the
// last sample is added to running sums (all, and per region that accepted it); the rate
// is the change of those sums over at least RATE_SPAN_MS, so the extra refreshes that
// follow a click do not turn one increment into a spike. A node's value is taken from its
// own region when that region answers (the freshest copy), else the highest any region
// has. Contributions not seen before count from 0, unless the set of answering regions
// changed (a region coming back shows old counts, not new increments).
const RATE_SPAN_MS = 1000;
function sampleRate(cs, t) {
  const regs = cs.regions || {};
  const owner = {};
  for (const [r, d] of Object.entries(regs)) if (d.node_id) owner[d.node_id] = r;
  const ownerOf = (n) => owner[n] || owner[n.split('~')[0]] || null;
  const seen = new Map();
  for (const [r, d] of Object.entries(regs)) {
    for (const [name, c] of Object.entries(d.counters || {})) {
      for (const [n, v] of Object.entries(c.nodes || {})) {
        const o = ownerOf(n);
        if (o && o !== r && regs[o]) continue; // its own region's copy is used
        const k = `${name}\n${n}`;
        const cur = seen.get(k);
        if (!cur || v > cur.v) seen.set(k, { v, o });
      }
    }
  }
  const set = Object.keys(regs).sort().join(',');
  const baseline = !state.history.length;
  const sum = state.sum;
  for (const [k, { v, o }] of seen) {
    const prev = state.known.get(k);
    state.known.set(k, v);
    if (baseline || (prev === undefined && set !== state.lastSet)) continue;
    const d = Number(minus(v, prev === undefined ? 0 : prev));
    if (!d) continue;
    sum.total += d;
    sum.by[o || 'other'] = (sum.by[o || 'other'] || 0) + d;
  }
  state.lastSet = set;
  state.history.push({ t, total: sum.total, by: { ...sum.by } });
  let ref = null;
  for (const h of state.history) if (h.t <= t - RATE_SPAN_MS) ref = h;
  state.history = state.history.filter((h) => h.t >= (ref ? ref.t : 0));
  if (!ref) return;
  const dt = (t - ref.t) / 1000;
  const by = {};
  for (const r of Object.keys(sum.by)) by[r] = (sum.by[r] - (ref.by[r] || 0)) / dt;
  state.samples.push({ t, total: (sum.total - ref.total) / dt, by });
  while (state.samples.length && state.samples[0].t < t - WINDOW_S * 1000 - POLL_MS) state.samples.shift();
}

// Round steps for an axis from lo to hi.
function ticks(lo, hi, n) {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function renderRate() {
  const box = $('rate-chart');
  const W = Math.max(260, box.clientWidth || 480), H = 180;
  const m = { l: 46, r: 10, t: 10, b: 24 };
  const now = performance.now();
  const x0 = now - WINDOW_S * 1000;
  const samples = state.samples.filter((s) => s.t >= x0 - POLL_MS);
  const regions = [...new Set([...state.regions, ...samples.flatMap((s) => Object.keys(s.by))])].sort(byOrder);
  const series = [{ name: 'all regions', key: null, width: 2.5 },
    ...regions.map((r) => ({ name: r, key: r, width: 1.5 }))];
  const val = (s, key) => (key === null ? s.total : s.by[key] || 0);
  const values = samples.flatMap((s) => series.map((se) => val(s, se.key)));
  const hi = Math.max(1, ...values), lo = Math.min(0, ...values);
  const yt = ticks(lo, hi, 4);
  const top = Math.max(hi, yt[yt.length - 1]), bot = Math.min(lo, yt[0]);
  const X = (t) => m.l + ((t - x0) / (WINDOW_S * 1000)) * (W - m.l - m.r);
  const Y = (v) => H - m.b - ((v - bot) / (top - bot || 1)) * (H - m.t - m.b);
  const last = samples[samples.length - 1];
  const peak = samples.length ? Math.max(...samples.map((s) => s.total)) : null;
  setText($('rate-now'), last ? num(last.total) : '–');
  setText($('rate-peak'), peak === null ? '–' : num(peak));
  const label = last
    ? `Increment rate over the last minute: ${num(last.total)} per second now, peak ${num(peak)}.`
    : 'Increment rate: waiting for two samples.';
  const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label,
    'data-testid': 'rate-svg', 'data-samples': String(samples.length) });
  for (const v of yt) {
    g.append(svg('line', { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v), class: v === 0 ? 'axis' : 'grid' }),
      svg('text', { x: m.l - 6, y: Y(v) + 4, 'text-anchor': 'end', class: 'tick', text: num(v) }));
  }
  for (let s = WINDOW_S; s >= 0; s -= 15) {
    g.append(svg('text', { x: X(now - s * 1000), y: H - 6, 'text-anchor': s === WINDOW_S ? 'start' : s ? 'middle' : 'end',
      class: 'tick', text: s ? `−${s} s` : 'now' }));
  }
  series.forEach((se, i) => {
    if (samples.length < 1) return;
    const pts = samples.map((s) => `${X(Math.max(s.t, x0)).toFixed(1)},${Y(val(s, se.key)).toFixed(1)}`).join(' ');
    const st = SERIES[i % SERIES.length];
    g.append(svg('polyline', { points: pts, fill: 'none', stroke: i ? st.color : 'currentColor',
      'stroke-width': se.width, 'stroke-dasharray': i ? st.dash : '', 'stroke-linejoin': 'round',
      'data-testid': `rate-line-${se.key || 'all'}`, class: i ? '' : 'line-all' }));
  });
  const legend = el('ul', { class: 'legend' }, ...series.map((se, i) => {
    const st = SERIES[i % SERIES.length];
    const sw = svg('svg', { width: 22, height: 10, 'aria-hidden': 'true' },
      svg('line', { x1: 0, x2: 22, y1: 5, y2: 5, stroke: i ? st.color : 'currentColor', 'stroke-width': se.width + 0.5,
        'stroke-dasharray': i ? st.dash : '' }));
    return el('li', {}, sw, ` ${se.name} `, el('span', { class: 'muted', text: last ? `${num(val(last, se.key))}/s` : '' }));
  }));
  box.replaceChildren(g, legend);
}

// ---- comparison --------------------------------------------------------------------------

const SIDES = [
  { key: 'eventual_consistency', name: 'Eventual', color: SERIES[0].color },
  { key: 'strong_consistency', name: 'Strong', color: SERIES[1].color },
];
const STATS = ['avg_ms', 'p50_ms', 'p99_ms', 'min_ms', 'max_ms'];

function renderCompareChart(r) {
  const box = $('cmp-chart');
  const W = Math.max(260, box.clientWidth || 480);
  const rows = ['avg_ms', 'p50_ms', 'p99_ms'];
  const m = { l: 40, r: 70, t: 6, b: 6 }, bar = 14, gap = 3, group = 2 * bar + gap + 14;
  const H = m.t + m.b + rows.length * group;
  const max = Math.max(...rows.flatMap((k) => SIDES.map((s) => Number(r[s.key][k]) || 0)), 0.001);
  const X = (v) => ((W - m.l - m.r) * v) / max;
  const label = rows.map((k) => `${k.replace('_ms', '')}: eventual ${r.eventual_consistency[k]} ms, ` +
    `strong ${r.strong_consistency[k]} ms`).join('; ');
  const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `Latency in milliseconds. ${label}.`, 'data-testid': 'cmp-svg' });
  rows.forEach((k, i) => {
    const y = m.t + i * group;
    g.append(svg('text', { x: 0, y: y + bar + 2, class: 'tick', text: k.replace('_ms', '') }));
    SIDES.forEach((s, j) => {
      const v = Number(r[s.key][k]) || 0;
      const yy = y + j * (bar + gap);
      g.append(svg('rect', { x: m.l, y: yy, width: Math.max(1, X(v)), height: bar, fill: s.color, rx: 2,
        'data-testid': `cmp-bar-${s.key.split('_')[0]}-${k.replace('_ms', '')}` }),
      svg('text', { x: m.l + Math.max(1, X(v)) + 5, y: yy + bar - 3, class: 'tick', text: `${num(v)} ms` }));
    });
  });
  const legend = el('ul', { class: 'legend' }, ...SIDES.map((s) => el('li', {},
    el('span', { class: 'swatch', style: `background:${s.color}`, 'aria-hidden': 'true' }), ` ${s.name}`)));
  box.replaceChildren(g, legend);
}

function renderCompare(r) {
  $('cmp-result').hidden = false;
  setText($('cmp-conclusion'), r.conclusion || '');
  setText($('cmp-speedup'), `${r.speedup}×`);
  setText($('cmp-iter'), r.iterations);
  $('cmp-body').replaceChildren(...SIDES.map((s) => el('tr', { 'data-testid': `cmp-row-${s.key.split('_')[0]}` },
    el('th', { scope: 'row' }, el('span', { class: 'swatch', style: `background:${s.color}`, 'aria-hidden': 'true' }),
      ` ${s.name}`),
    ...STATS.map((k) => el('td', { class: 'num', text: r[s.key][k],
      'data-testid': `cmp-${s.key.split('_')[0]}-${k.replace('_ms', '')}` })))));
  $('cmp-desc').replaceChildren(...SIDES.filter((s) => r[s.key].description).map((s) =>
    el('li', {}, el('strong', { text: `${s.name}: ` }), r[s.key].description)));
  state.compare = r;
  renderCompareChart(r);
}

async function compare(ev) {
  ev.preventDefault();
  const name = $('cmp-name').value.trim();
  const it = $('cmp-iterations').value.trim();
  if (!/^[A-Za-z0-9_.:-]{1,200}$/.test(name)) {
    showError('Comparison: counter names are 1-200 characters of A-Z a-z 0-9 _ . : -');
    return;
  }
  if (!/^\d+$/.test(it) || +it < 1 || +it > 10000) {
    showError('Comparison: iterations must be a whole number from 1 to 10000.');
    return;
  }
  const t0 = performance.now();
  const tell = () => setText($('cmp-status'),
    `Running ${it} increments of each kind… ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  tell();
  const timer = setInterval(tell, 1000);
  $('cmp-submit').disabled = true;
  try {
    const r = await api('POST', '/api/compare', JSON.stringify({ counter_name: name, iterations: +it }),
      { timeoutMs: 600000 });
    showError('');
    renderCompare(r);
    setText($('cmp-status'), `Done in ${((performance.now() - t0) / 1000).toFixed(1)} s.`);
  } catch (e) {
    setText($('cmp-status'), 'The comparison did not run.');
    showError(explain('Comparison', e));
  } finally {
    clearInterval(timer);
    $('cmp-submit').disabled = false;
  }
}

// ---- increment -------------------------------------------------------------------------

async function increment(ev) {
  ev.preventDefault();
  const name = $('inc-name').value.trim();
  const amount = $('inc-amount').value.trim();
  const routing = $('inc-routing').value;
  const out = $('inc-result');
  if (!/^-?\d+$/.test(amount)) { showError('Increment: the amount must be a whole number.'); return; }
  // The amount goes in as written, so 64-bit values are not rounded by a JS number.
  const body = `{"counter_name":${JSON.stringify(name)},"amount":${amount},"routing":${JSON.stringify(routing)}}`;
  const client = $('client-region').value.trim();
  const headers = routing === 'nearest' && client ? { 'X-Client-Region': client } : {};
  $('inc-submit').disabled = true;
  try {
    const r = await api('POST', '/api/increment', body, { headers });
    showError('');
    out.replaceChildren('Routed to ', el('strong', { 'data-testid': 'inc-routed', text: r.region }),
      ` (${r.node_id}) by ${r.routing} in `,
      el('span', { 'data-testid': 'inc-latency', text: `${r.latency_ms} ms` }),
      `: ${r.region} now counts ${r.total_count} for ${r.counter}.`,
      r.duplicate ? ' (duplicate: counted once)' : '',
      r.pending ? ' Held for its token\'s home region, which counts it once it learns of it.' : '');
    refresh();
  } catch (e) {
    setText(out, '');
    showError(explain('Increment', e));
  } finally {
    $('inc-submit').disabled = false;
  }
}

// ---- polling -----------------------------------------------------------------------------

async function refresh() {
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  const [st, cs] = await Promise.allSettled([api('GET', '/api/status'), api('GET', '/api/counters')]);
  try {
    if (st.status === 'fulfilled') state.status = st.value;
    if (cs.status === 'fulfilled') {
      state.counters = cs.value;
      sampleRate(cs.value, performance.now());
    }
    renderRegions();
    renderCounters();
    renderRate();
    const failed = [st, cs].filter((p) => p.status === 'rejected').map((p) => p.reason.message);
    document.body.classList.toggle('stale', failed.length > 0);
    if (failed.length) {
      setText($('live'), `Not live: ${failed.join('; ')}`, 'bad');
    } else {
      const q = cs.value.query_time_ms;
      setText($('live'), `Live · updated ${new Date().toLocaleTimeString()}` +
        (q !== undefined ? ` · regions answered in ${q} ms` : ''), 'ok');
    }
  } catch (e) {
    setText($('live'), `Cannot show the answer: ${e.message}`, 'bad');
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

function loop() {
  refresh().finally(() => setTimeout(loop, POLL_MS));
}

document.addEventListener('DOMContentLoaded', () => {
  showToken();
  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setToken($('token-input').value.trim());
    setText($('admin-result'), token() ? 'Admin token saved: admin calls now carry it.' : 'Admin token cleared.');
    showError('');
  });
  $('token-clear').addEventListener('click', () => {
    $('token-input').value = '';
    setToken('');
    setText($('admin-result'), 'Admin token cleared.');
  });
  $('inc-form').addEventListener('submit', increment);
  $('cmp-form').addEventListener('submit', compare);
  $('inc-routing').addEventListener('change', () => {
    $('client-region-label').hidden = $('inc-routing').value !== 'nearest';
  });
  $('error-close').addEventListener('click', () => showError(''));
  $('heal-all').addEventListener('click', () => admin('Heal all', '/admin/partition/all?enabled=false',
    (r) => `All regions healed (${r.regions_updated} updated).`));
  $('force-sync').addEventListener('click', async () => {
    $('force-sync').disabled = true;
    await admin('Force sync', '/admin/force-sync',
      (r) => `Force sync done: ${r.status}, ${r.regions_synced} region(s) synced.`);
    $('force-sync').disabled = false;
  });
  // The charts follow the width they are given.
  let resizeTimer;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { renderRate(); if (state.compare) renderCompareChart(state.compare); }, 100);
  });
  loop();
});
