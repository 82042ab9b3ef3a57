// counterd dashboard: polls the gateway that serves it (same origin) once a second and
// drives its API. Plain DOM, no framework; elements are created once per key (region,
// counter) and updated in place, so focus and clicks survive the refreshes. The two
// charts are SVG drawn here. Admin calls carry the admin token kept in localStorage.
// The counters are read one page at a time (a name prefix, a cursor), and the hot and
// diverged views ask /api/top, so what a poll transfers does not grow with the store.
// The table shows one namespace (picked above it; `default` lists as the lab always did),
// and each row can be cleared or deleted after an in-page confirmation.
'use strict';

const POLL_MS = 1000;
const WINDOW_S = 60; // the rate chart's time span
const ORDER = ['us-east', 'us-west', 'eu-west']; // the lab's order; other regions follow
const TOKEN_KEY = 'counterd.adminToken';
// One poll is /api/status, one page of /api/counters and, in the hot and diverged views,
// /api/top: at most POLL_BUDGET bytes in all. The page asks PAGE_ROWS rows within
// max_bytes=PAGE_BYTES (the server stops a page before that, whatever its rows weigh, and
// says where the next one starts); the status and TOP_ROWS top rows (about 20 KB with
// 200-byte names) take the rest.
const POLL_BUDGET = 256 * 1024;
const PAGE_ROWS = 100;
const PAGE_BYTES = 192 * 1024;
const TOP_ROWS = 50;
const NAME_CHARS = /^[A-Za-z0-9_.:-]*$/;
const NS_NAME = /^[A-Za-z0-9_.-]{1,48}$/;
const NS_POLL_MS = 5000; // the namespaces and the one shown: small answers, read less often
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
  view: 'all', // all | hot | diverged
  prefix: '', // the name prefix searched
  pages: [{ cursor: '', offset: 0 }], // the pages walked to: the last is shown
  rows: PAGE_ROWS, // rows asked a page (a page of heavy rows holds fewer: max_bytes)
  query: '', // the listing query of state.counters
  top: null, topError: '', // the last /api/top answer for the view shown, or why there is none
  pollBytes: 0, // what the last poll transferred (bodies)
  rateFrom: '', // 'status' (the regions' changes) or 'page' (the counters listed)
  searchError: '', // why the text in the search field is not searched
  ns: 'default', // the namespace whose counters are listed
  nsList: null, nsListError: '', // GET /v1/namespaces' namespaces, or why there are none
  nsInfo: null, nsError: null, // GET /v1/namespaces/{ns} of the one shown, or its ApiError
  nsMissing: 0, // how many reads in a row found the namespace shown missing
  acting: false, // a clear or delete is in flight
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
  const want = new Set(keys);
  for (const c of [...parent.children]) if (!want.has(c.dataset.key)) c.remove();
  // In the order of keys (moved only when it differs, so focus stays where it is).
  if ([...parent.children].some((c, i) => c.dataset.key !== keys[i])) {
    for (const k of keys) for (const c of parent.children) if (c.dataset.key === k) { parent.append(c); break; }
  }
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
  if (opts.sizes) opts.sizes.push(text.length);
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
      // The region's count of counters (its listing's total), not the page's rows.
      const n = c.total_counters !== undefined ? c.total_counters : Object.keys(c.counters || {}).length;
      // In a namespace other than default, the count of that namespace's.
      setText(q('counters'), Number(n).toLocaleString('en-US') + (state.ns === 'default' ? '' : ` in ${state.ns}`));
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
  const want = ['Counter', ...regions, 'Convergence lag', 'Actions'];
  if ([...head.children].map((th) => th.textContent).join('|') !== want.join('|')) {
    head.replaceChildren(...want.map((t, i) =>
      el('th', { scope: 'col', text: t, class: i > 0 && i <= regions.length ? 'num' : '' })));
    $('counters-body').replaceChildren(); // columns changed: rebuild rows
  }
  const body = $('counters-body');
  const names = [...(all.counter_names || [])];
  for (const name of names) {
    const row = keyed(body, name, () => el('tr', { 'data-testid': `counter-row-${name}` },
      el('th', { scope: 'row', text: name }),
      ...regions.map((r) => el('td', { class: 'num', 'data-label': r },
        el('span', { class: 'total', 'data-testid': `counter-${name}-${r}` }),
        el('ul', { class: 'vec', 'data-testid': `counter-${name}-${r}-nodes`, 'aria-label': `${name} in ${r}: nodes` }))),
      el('td', { 'data-label': 'Convergence lag' },
        el('span', { class: 'lag', 'data-testid': `counter-${name}-lag` }), ' ',
        el('span', { 'data-testid': `counter-${name}-agree` })),
      el('td', { 'data-label': 'Actions' }, el('div', { class: 'row-actions' },
        el('button', { type: 'button', class: 'secondary', text: 'Clear', 'data-testid': `counter-${name}-clear`,
          'aria-label': `Clear ${name}`, onclick: () => counterAction('clear', name) }),
        el('button', { type: 'button', class: 'secondary danger', text: 'Delete',
          'data-testid': `counter-${name}-delete`, 'aria-label': `Delete ${name}`,
          onclick: () => counterAction('delete', name) })))));
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
      'data-testid': 'counters-empty', text: emptyText(all) })));
  }
  renderListInfo(all, names.length);
}

// What an empty page means, said as it is: "no counters yet" only when every region
// answered, nothing was cut and the store holds none.
function emptyText(all) {
  const total = all.total_regions || 0, healthy = all.healthy_regions || 0;
  const some = healthy < total ? ` in the ${healthy} of ${total} regions that answer` : '';
  if (total > 0 && healthy === 0) {
    return `No region answers (0 of ${total}): the counters cannot be listed now.`;
  }
  if (state.prefix) return `No counter name starts with "${state.prefix}"${some}.`;
  if (all.truncated) return 'The listing was cut before any counter of this page: see above.';
  if (state.pages.length > 1) return 'No counters on this page: go back with Previous.';
  if (all.total_counters > 0) return `This page is empty, yet the regions hold ${count(all.total_counters)} counters.`;
  const where = state.ns === 'default' ? '' : ` in ${state.ns}`;
  if (some) return `No counters${where}${some}; the others may hold some.`;
  return `No counters${where} yet: increment one.`;
}

const count = (n) => Number(n).toLocaleString('en-US');

// The line above the table: which rows these are, of how many, and anything missing.
function renderListInfo(all, rows) {
  const page = state.pages[state.pages.length - 1];
  const parts = [];
  // With a prefix, "of N" counts the names that match; the store's total follows.
  const n = state.prefix ? all.matching_counters : all.total_counters;
  const what = state.prefix ? `counters starting with "${state.prefix}"` : 'counters';
  const total = all.total_regions || 0, healthy = all.healthy_regions || 0;
  if (rows) {
    parts.push(`${what} ${count(page.offset + 1)}–${count(page.offset + rows)}${n !== undefined ? ` of ${count(n)}` : ''}`);
  } else {
    parts.push(`no ${what} here`);
  }
  if (state.prefix && all.total_counters !== undefined) parts.push(`${count(all.total_counters)} counters in all`);
  parts.push(`page ${state.pages.length}`);
  const errors = Object.entries(all.region_errors || {}).map(([r, why]) => `${r}: ${why}`);
  if (total > 0 && healthy === 0) {
    parts.splice(0, parts.length, 'no region answers: nothing can be listed now', ...errors);
  } else if (healthy < total) {
    parts.push(`${healthy} of ${total} regions answer (counters that only the others hold are not listed)`,
      ...errors);
  }
  if (all.truncated && !all.next_cursor) parts.push('the listing was cut: this page may miss counters');
  if (state.searchError) parts.unshift(state.searchError);
  const warn = healthy < total || (all.truncated && !all.next_cursor) || !!state.searchError;
  setText($('list-info'), parts.join(' · ').replace(/^./, (c) => c.toUpperCase()), warn ? 'result warn-text' : 'result');
  $('page-prev').disabled = state.pages.length < 2;
  $('page-next').disabled = !all.next_cursor;
}

// ---- the hot and diverged views ----------------------------------------------------------

const VIEWS = {
  hot: { by: 'rate', title: 'counters that changed most in the last minute', none: 'Nothing was counted in the last minute.',
    help: (w) => `The counters that changed most in the last ${w} s, largest first, as the ` +
      'regions track them while counting (a bounded sketch: an estimate when very many counters change).' },
  diverged: { by: 'lag', title: 'most diverged counters', none: 'No diverged counter: the regions that answer hold the same counts.',
    help: () => 'The counters whose regions disagree most (largest total minus smallest among ' +
      'the regions that answer), largest first. A force-sync or the next sync rounds converge them.' },
};

// The top rows of the namespace shown: in default every key (as always), in another one
// its "<ns>/<name>" keys among the store's top, named without the prefix.
function topRows(top) {
  const rows = top.counters || [];
  if (state.ns === 'default') return rows;
  const p = `${state.ns}/`;
  return rows.filter((c) => String(c.counter).startsWith(p)).map((c) => ({ ...c, counter: c.counter.slice(p.length) }));
}

function renderTop() {
  const v = VIEWS[state.view];
  const body = $('top-body');
  const top = state.top;
  setText($('view-help-top'), v.help(top && top.window_seconds ? top.window_seconds : 60));
  if (!top) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: '5', class: 'muted', 'data-testid': 'top-empty',
      text: state.topError ? `Cannot show this view: ${state.topError}` : 'Loading…' })));
    setText($('list-info'), state.topError ? 'Not available' : '', state.topError ? 'result warn-text' : 'result');
    return;
  }
  const rows = topRows(top);
  const names = rows.map((c) => c.counter);
  if (body.firstElementChild && !body.firstElementChild.dataset.key) body.replaceChildren();
  rows.forEach((c) => {
    const name = c.counter;
    const row = keyed(body, name, () => el('tr', { 'data-testid': `top-row-${name}` },
      el('th', { scope: 'row' }, el('button', { type: 'button', class: 'link', text: name,
        title: `Show ${name} in every region`, onclick: () => showCounter(name) })),
      el('td', { class: 'num', 'data-label': 'Total', 'data-testid': `top-${name}-total` }),
      el('td', { class: 'num', 'data-label': 'Last minute', 'data-testid': `top-${name}-rate` }),
      el('td', { class: 'num', 'data-label': 'Lag', 'data-testid': `top-${name}-lag` }),
      el('td', { 'data-label': 'Regions' }, el('span', { 'data-testid': `top-${name}-agree` }))));
    setText(row.querySelector(`[data-testid="top-${name}-total"]`), c.total_count);
    setText(row.querySelector(`[data-testid="top-${name}-rate"]`),
      c.rate_per_minute === undefined ? '–' : `${num(Number(c.rate_per_minute))}/min`);
    setText(row.querySelector(`[data-testid="top-${name}-lag"]`), c.lag === undefined ? '–' : c.lag);
    setText(row.querySelector(`[data-testid="top-${name}-agree"]`), c.converged ? 'converged' : 'diverged',
      c.converged ? 'badge ok' : 'badge warn');
    row.classList.toggle('diverged', !c.converged);
  });
  prune(body, names);
  const total = top.total_regions || 0, healthy = top.healthy_regions === undefined ? total : top.healthy_regions;
  const errors = Object.entries(top.region_errors || {}).map(([r, why]) => `${r}: ${why}`).join('; ');
  const partial = healthy < total ? ` (${healthy} of ${total} regions answer: what only the others ` +
    `hold is not here${errors ? `; ${errors}` : ''})` : '';
  if (!names.length) {
    body.append(el('tr', { 'data-key': '' }, el('td', { colspan: '5', class: 'muted', 'data-testid': 'top-empty',
      text: total && !healthy ? `No region answers: nothing to rank now${errors ? ` (${errors})` : ''}.`
        : (state.ns !== 'default' && (top.counters || []).length
          ? `None of ${state.ns}'s counters is among the store's top ${TOP_ROWS}.` : v.none) + partial })));
  }
  setText($('list-info'), names.length ? `The ${names.length} ${v.title}` +
    `${state.ns === 'default' ? '' : ` of ${state.ns} (among the store's top ${TOP_ROWS})`}${partial}` : '',
    healthy < total ? 'result warn-text' : 'result');
}

// From a top view to that counter in every region: the All view, searched by its name.
function showCounter(name) {
  $('search').value = name;
  setView('all');
  search(name);
}

// ---- pages, search and views ---------------------------------------------------------------

function listQuery() {
  const q = new URLSearchParams({ limit: String(state.rows), max_bytes: String(PAGE_BYTES) });
  if (state.ns !== 'default') q.set('namespace', state.ns); // default: every key, as always
  if (state.prefix) q.set('prefix', state.prefix);
  const page = state.pages[state.pages.length - 1];
  if (page.cursor) q.set('cursor', page.cursor);
  return `/api/counters?${q}`;
}

// Shows the first page of the counters whose names start with prefix.
function search(prefix) {
  const bad = !NAME_CHARS.test(prefix) || prefix.length > 200;
  state.searchError = bad ? `"${prefix}" is not searched: counter names are made of A-Z a-z 0-9 _ . : - ` +
    `(up to 200); the list still shows ${state.prefix ? `"${state.prefix}"` : 'every counter'}` : '';
  $('search').setAttribute('aria-invalid', String(bad));
  if (bad) {
    setText($('list-info'), state.searchError, 'result warn-text');
    return;
  }
  if (prefix === state.prefix && state.pages.length === 1) return;
  state.prefix = prefix;
  state.pages = [{ cursor: '', offset: 0 }];
  turned();
}

function nextPage() {
  const cs = state.counters;
  if (!cs || !cs.next_cursor || state.query !== listQuery()) return;
  const page = state.pages[state.pages.length - 1];
  state.pages.push({ cursor: cs.next_cursor, offset: page.offset + (cs.counter_names || []).length });
  turned();
}

function prevPage() {
  if (state.pages.length < 2) return;
  state.pages.pop();
  turned();
}

// The page asked changed: keep the rows shown until the new ones come, then draw them.
function turned() {
  $('page-prev').disabled = true;
  $('page-next').disabled = true;
  setText($('list-info'), 'Loading…', 'result');
  refresh();
}

function setView(view) {
  if (!VIEWS[view] && view !== 'all') return;
  state.view = view;
  state.top = null;
  state.topError = '';
  for (const b of document.querySelectorAll('.views .view')) {
    b.setAttribute('aria-pressed', String(b.dataset.view === view));
  }
  const all = view === 'all';
  $('counters-box').hidden = !all;
  $('search-form').hidden = !all;
  $('view-help-all').hidden = !all;
  $('top-box').hidden = all;
  $('view-help-top').hidden = all;
  $('top-body').replaceChildren();
  if (all && state.counters) renderCounters(); else if (!all) renderTop();
  refresh();
}

// ---- namespaces and the counter lifecycle ---------------------------------------------------

const TYPES = {
  eventual: 'eventual: replicated to every region (PN-counter)',
  regional: 'regional: counted where it lands, never replicated',
  strong: 'strong: through the strong counter',
};

// Seconds as a person says them: "90 s", "10 min", "1 h", "30 d".
function duration(s) {
  const n = Number(s);
  if (n && n % 86400 === 0) return `${n / 86400} d`;
  if (n && n % 3600 === 0) return `${n / 3600} h`;
  if (n && n % 60 === 0) return `${n / 60} min`;
  return `${n} s`;
}

// The namespace and name a row's counter is: in default, the legacy listing names the
// other namespaces' counters "<ns>/<name>".
function target(name) {
  if (state.ns !== 'default') return { ns: state.ns, name };
  const i = name.indexOf('/');
  return i > 0 ? { ns: name.slice(0, i), name: name.slice(i + 1) } : { ns: 'default', name };
}

const counterPath = (t) => `/v1/counters/${encodeURIComponent(t.ns)}/${encodeURIComponent(t.name)}`;

async function loadNamespaces() {
  try {
    const r = await api('GET', '/v1/namespaces');
    state.nsList = (r.namespaces || []).filter((n) => n && n.namespace && !n.deleted);
    state.nsListError = '';
  } catch (e) {
    state.nsListError = e.message;
  }
  renderNsList();
}

// The namespace shown, as the gateway sees it in every region. One that is gone (deleted
// meanwhile: not found twice in a row, so a region that has not yet learnt of a new one
// does not count) gives way to default, and the page says so.
async function loadNsInfo() {
  const ns = state.ns;
  try {
    const r = await api('GET', `/v1/namespaces/${encodeURIComponent(ns)}`);
    if (ns !== state.ns) return;
    state.nsInfo = r;
    state.nsError = null;
    state.nsMissing = 0;
  } catch (e) {
    if (ns !== state.ns) return;
    state.nsInfo = null;
    state.nsError = e;
    state.nsMissing = e.status === 404 && e.code === 'not_found' ? (state.nsMissing || 0) + 1 : 0;
    if (ns !== 'default' && state.nsMissing >= 2) {
      setNamespace('default');
      setText($('ns-result'), `Namespace ${ns} no longer exists (deleted): showing default.`, 'result warn-text');
      return;
    }
  }
  renderNsInfo();
}

function renderNsList() {
  const sel = $('ns-select');
  const names = (state.nsList || []).map((n) => n.namespace).filter((n) => n !== 'default').sort();
  const want = ['default', ...names];
  if (!want.includes(state.ns)) want.push(state.ns); // just created: the list catches up
  const type = Object.fromEntries((state.nsList || []).map((n) => [n.namespace, n.type]));
  const texts = want.map((n) => (type[n] ? `${n} (${type[n]})` : n));
  if ([...sel.options].map((o) => `${o.value}=${o.textContent}`).join('|') !==
      want.map((n, i) => `${n}=${texts[i]}`).join('|')) {
    sel.replaceChildren(...want.map((n, i) => el('option', { value: n, text: texts[i] })));
  }
  if (sel.value !== state.ns) sel.value = state.ns;
  sel.title = state.nsListError ? `Namespaces cannot be listed: ${state.nsListError}` : '';
}

function renderNsInfo() {
  const q = (id) => document.querySelector(`[data-testid="${id}"]`);
  const n = state.nsInfo;
  if (!n) {
    const e = state.nsError;
    setText(q('ns-type'), e ? `not available (${e.status ? `HTTP ${e.status}${e.code ? ` ${e.code}` : ''}`
      : 'no answer'})` : '…', e ? 'warn-text' : '');
    q('ns-type').title = e ? e.message : '';
    for (const id of ['ns-ttl', 'ns-window', 'ns-version']) setText(q(id), '–');
    setText(q('ns-converged'), '', '');
    return;
  }
  setText(q('ns-type'), TYPES[n.type] || String(n.type), '');
  q('ns-type').title = '';
  setText(q('ns-ttl'), Number(n.ttl_seconds) === 0 ? 'never'
    : `${duration(n.ttl_seconds)} (a counter idle that long expires)`);
  setText(q('ns-window'), duration(n.idempotency_window_seconds));
  setText(q('ns-version'), n.version);
  q('ns-version').title = n.updated_by ? `set by ${n.updated_by}` +
    (n.updated_at ? ` at ${new Date(Number(n.updated_at) * 1000).toISOString()}` : '') : 'never set: the defaults';
  const regs = Object.entries(n.regions || {}).sort(([a], [b]) => byOrder(a, b));
  const differ = regs.filter(([, v]) => !v || v.error !== undefined || !same(v.version, n.version));
  if (n.converged === true) {
    setText(q('ns-converged'), 'every region runs it', 'badge ok');
  } else if (n.converged === false) {
    setText(q('ns-converged'), `regions differ: ${(differ.length ? differ : regs).map(([r, v]) =>
      `${r} ${!v ? 'no answer' : v.error !== undefined ? v.error : `v${v.version}`}`).join(', ')}`, 'badge warn');
  } else {
    setText(q('ns-converged'), '', '');
  }
}

// Shows the counters of namespace ns: the first page, the same search.
function setNamespace(ns) {
  if (ns === state.ns) return;
  state.ns = ns;
  state.nsInfo = null;
  state.nsError = null;
  state.nsMissing = 0;
  state.pages = [{ cursor: '', offset: 0 }];
  $('counters-body').replaceChildren(); // another namespace's rows, even where names match
  $('top-body').replaceChildren();
  setText($('ns-result'), '');
  setText($('action-result'), '');
  renderNsList();
  renderNsInfo();
  loadNsInfo();
  turned();
}

// An in-page confirmation: resolves true when the person confirms, false otherwise
// (Cancel, Escape).
function confirmAction(title, text, okText) {
  const d = $('confirm');
  setText($('confirm-h'), title);
  $('confirm-text').replaceChildren(...text);
  setText($('confirm-ok'), okText);
  return new Promise((resolve) => {
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
    d.returnValue = '';
    d.showModal();
    $('confirm-cancel').focus(); // the harmless answer is the default one
  });
}

const WHAT = {
  clear: 'the count restarts from 0 here; increments other regions made that this region has ' +
    'not seen yet survive.',
  delete: 'the counter disappears everywhere; counting it again starts from 0.',
};

// Clears or deletes a row's counter through the gateway, once confirmed.
async function counterAction(kind, name) {
  if (state.acting) return;
  const t = target(name);
  const verb = kind === 'clear' ? 'Clear' : 'Delete';
  const ok = await confirmAction(`${verb} ${t.name}?`, [`${verb} the counter `, el('strong', { text: t.name }),
    ' in namespace ', el('strong', { text: t.ns }), `: ${WHAT[kind]}`], verb);
  const out = $('action-result');
  if (!ok) {
    setText(out, `${verb} cancelled: ${t.name} in ${t.ns} is unchanged.`, 'result');
    return;
  }
  state.acting = true;
  for (const b of document.querySelectorAll('.row-actions button')) b.disabled = true;
  try {
    let r;
    if (kind === 'clear') {
      r = await api('POST', `${counterPath(t)}/clear`, '{}');
      setText(out, `${r.region} cleared ${t.name} in ${t.ns}: it had counted ${r.cleared}, it now ` +
        `counts ${r.count}${same(r.count, 0) ? '' : ' (increments it had not seen when it cleared)'}` +
        `${r.duplicate ? ' (a repeated request: cleared once)' : ''}. The other regions take the ` +
        'clear as they sync.', 'result');
    } else {
      r = await api('DELETE', counterPath(t));
      setText(out, `${r.region} deleted ${t.name} in ${t.ns}: gone from its reads and listings now, ` +
        'from the other regions\' as they sync; counting it again starts from 0.', 'result');
    }
    showError('');
  } catch (e) {
    setText(out, '');
    showError(explain(`${verb} ${t.name} in ${t.ns}`, e));
  } finally {
    state.acting = false;
    for (const b of document.querySelectorAll('.row-actions button')) b.disabled = false;
  }
  refresh();
}

// A new namespace (or new settings for one that exists: a PUT sets what it gives).
async function createNamespace(ev) {
  ev.preventDefault();
  const name = $('ns-name').value.trim();
  const ttl = $('ns-ttl-new').value.trim();
  if (!NS_NAME.test(name)) {
    showError('New namespace: names are 1-48 characters of A-Z a-z 0-9 _ . -');
    return;
  }
  if (!/^\d+$/.test(ttl) || +ttl > 315360000) {
    showError('New namespace: the retention is a whole number of seconds from 0 (never) to 315360000.');
    return;
  }
  const body = `{"type":${JSON.stringify($('ns-type-new').value)},"ttl_seconds":${ttl}}`;
  $('ns-submit').disabled = true;
  try {
    const r = await api('PUT', `/v1/namespaces/${encodeURIComponent(name)}`, body);
    showError('');
    setNamespace(r.namespace || name);
    setText($('ns-result'), `Namespace ${r.namespace} saved on ${r.region}: ${r.type}, retention ` +
      `${Number(r.ttl_seconds) === 0 ? 'never' : duration(r.ttl_seconds)}, version ${r.version}. ` +
      'The other regions take it as they sync.', 'result');
    loadNamespaces();
  } catch (e) {
    setText($('ns-result'), '');
    showError(explain(`New namespace ${name}`, e));
  } finally {
    $('ns-submit').disabled = false;
  }
}

function nsLoop() {
  Promise.allSettled([loadNamespaces(), loadNsInfo()]).finally(() => setTimeout(nsLoop, NS_POLL_MS));
}

// ---- increment rate --------------------------------------------------------------------

// One sample from /api/status: each region's `changes.local` (the amounts its own
// increments changed since it started) grows by what it accepted; the whole store's rate
// is the sum. A region that restarted (another node id, or a smaller count) or came back
// counts from its next reading. Returns false when some answering region does not give
// the figure (the original lab's): the page's counters are sampled instead.
function sampleStatus(st, t) {
  const regs = (st && st.regions) || {};
  const up = Object.entries(regs).filter(([, d]) => d.status === 'healthy');
  if (!up.length) return state.rateFrom === 'status'; // nothing to read now: no sample
  if (up.some(([, d]) => !d.changes || d.changes.local === undefined)) return false;
  if (state.rateFrom !== 'status') { state.rateFrom = 'status'; resetRate(); }
  const known = state.known;
  state.known = new Map();
  for (const [r, d] of up) {
    const v = Number(d.changes.local), prev = known.get(r);
    state.known.set(r, { node: d.node_id, v });
    if (!prev || prev.node !== d.node_id || v < prev.v) continue;
    state.sum.total += v - prev.v;
    state.sum.by[r] = (state.sum.by[r] || 0) + v - prev.v;
  }
  pushRate(t);
  return true;
}

function resetRate() {
  state.known = new Map();
  state.history = [];
}

// One sample from /api/counters. Every (counter, node) contribution's change since the
// last sample is added to running sums (all, and per region that accepted it); the rate
// is the change of those sums over at least RATE_SPAN_MS, so the extra refreshes that
// follow a click do not turn one increment into a spike. A node's value is taken from its
// own region when that region answers (the freshest copy), else the highest any region
// has. Contributions not seen before count from 0, unless the set of answering regions
// changed (a region coming back shows old counts, not new increments) or the page did
// (another prefix or page shows counters that were there before). Only the counters of
// the page are sampled: with more than a page, the chart says so (rate-scope).
const RATE_SPAN_MS = 1000;
function sampleRate(cs, t, query) {
  if (state.rateFrom !== 'page') { state.rateFrom = 'page'; resetRate(); }
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
  const set = `${query}\n${Object.keys(regs).sort().join(',')}`;
  const baseline = !state.history.length;
  const sum = state.sum;
  const known = state.known;
  state.known = new Map();
  for (const [k, { v, o }] of seen) {
    const prev = known.get(k);
    state.known.set(k, v);
    if (baseline || (prev === undefined && set !== state.lastSet)) continue;
    const d = Number(minus(v, prev === undefined ? 0 : prev));
    if (!d) continue;
    sum.total += d;
    sum.by[o || 'other'] = (sum.by[o || 'other'] || 0) + d;
  }
  state.lastSet = set;
  pushRate(t);
}

// Adds the running sums at t to the history, and a rate point over RATE_SPAN_MS.
function pushRate(t) {
  const sum = state.sum;
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
  const cs = state.counters;
  const whole = cs && !state.prefix && state.pages.length === 1 && !cs.next_cursor && !cs.truncated;
  setText($('rate-scope'), state.rateFrom === 'status' ? 'every counter (the regions\' own figures)'
    : !cs ? 'the counters listed' : whole ? 'every counter'
    : `the ${count((cs.counter_names || []).length)} counters of the page shown` +
      (cs.total_counters !== undefined ? ` (of ${count(cs.total_counters)})` : ''));
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
  { key: 'eventual_consistency', id: 'eventual', name: 'Eventual', color: SERIES[0].color },
  { key: 'strong_consistency', id: 'strong', name: 'Strong', color: SERIES[1].color },
];
// The third series, when the gateway measures the etcd strong roles too (lab up --strong etcd).
const ETCD_SIDE = { key: 'strong_etcd_consistency', id: 'etcd', name: 'Strong (etcd)', color: SERIES[2].color };
const sidesOf = (r) => (r.strong_etcd_consistency ? [...SIDES, ETCD_SIDE] : SIDES);
const STATS = ['avg_ms', 'p50_ms', 'p99_ms', 'min_ms', 'max_ms'];

function renderCompareChart(r) {
  const box = $('cmp-chart');
  const W = Math.max(260, box.clientWidth || 480);
  const rows = ['avg_ms', 'p50_ms', 'p99_ms'];
  const sides = sidesOf(r);
  const m = { l: 40, r: 70, t: 6, b: 6 }, bar = 14, gap = 3;
  const group = sides.length * bar + (sides.length - 1) * gap + 14;
  const H = m.t + m.b + rows.length * group;
  const max = Math.max(...rows.flatMap((k) => sides.map((s) => Number(r[s.key][k]) || 0)), 0.001);
  const X = (v) => ((W - m.l - m.r) * v) / max;
  const label = rows.map((k) => `${k.replace('_ms', '')}: ` +
    sides.map((s) => `${s.name.toLowerCase()} ${r[s.key][k]} ms`).join(', ')).join('; ');
  const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `Latency in milliseconds. ${label}.`, 'data-testid': 'cmp-svg' });
  rows.forEach((k, i) => {
    const y = m.t + i * group;
    g.append(svg('text', { x: 0, y: y + bar + 2, class: 'tick', text: k.replace('_ms', '') }));
    sides.forEach((s, j) => {
      const v = Number(r[s.key][k]) || 0;
      const yy = y + j * (bar + gap);
      g.append(svg('rect', { x: m.l, y: yy, width: Math.max(1, X(v)), height: bar, fill: s.color, rx: 2,
        'data-testid': `cmp-bar-${s.id}-${k.replace('_ms', '')}` }),
      svg('text', { x: m.l + Math.max(1, X(v)) + 5, y: yy + bar - 3, class: 'tick', text: `${num(v)} ms` }));
    });
  });
  const legend = el('ul', { class: 'legend' }, ...sides.map((s) => el('li', {},
    el('span', { class: 'swatch', style: `background:${s.color}`, 'aria-hidden': 'true' }), ` ${s.name}`)));
  box.replaceChildren(g, legend);
}

function renderCompare(r) {
  $('cmp-result').hidden = false;
  const sides = sidesOf(r);
  setText($('cmp-conclusion'), r.conclusion || '');
  setText($('cmp-speedup'), `${r.speedup}×`);
  setText($('cmp-iter'), r.iterations);
  const etcd = $('cmp-etcd');
  etcd.hidden = !r.strong_etcd_consistency;
  setText(etcd, r.strong_etcd_consistency ? `On etcd: ${r.conclusion_etcd} (speedup ${r.speedup_etcd}×).` : '');
  $('cmp-body').replaceChildren(...sides.map((s) => el('tr', { 'data-testid': `cmp-row-${s.id}` },
    el('th', { scope: 'row' }, el('span', { class: 'swatch', style: `background:${s.color}`, 'aria-hidden': 'true' }),
      ` ${s.name}`),
    ...STATS.map((k) => el('td', { class: 'num', text: r[s.key][k],
      'data-testid': `cmp-${s.id}-${k.replace('_ms', '')}` })))));
  $('cmp-desc').replaceChildren(...sides.filter((s) => r[s.key].description).map((s) =>
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
  if (state.ns !== 'default') { addInNamespace(name, amount); return; }
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

// An increment in the namespace shown: AddAndGetCount through the gateway, which picks
// the region (the namespace's type says where it goes; the routing choice is default's).
async function addInNamespace(name, amount) {
  const out = $('inc-result');
  const t = { ns: state.ns, name };
  $('inc-submit').disabled = true;
  try {
    const r = await api('POST', `${counterPath(t)}/add-and-get`, `{"delta":${amount}}`);
    showError('');
    out.replaceChildren('Counted in ', el('strong', { text: t.ns }), ' by ',
      el('strong', { 'data-testid': 'inc-routed', text: r.region }), ` (${r.node_id}): ${r.region} now ` +
      `counts ${r.count} for ${r.counter}.`, r.duplicate ? ' (duplicate: counted once)' : '',
      r.pending ? ' Held for its token\'s home region, which counts it once it learns of it.' : '');
    refresh();
  } catch (e) {
    setText(out, '');
    showError(explain(`Increment in ${t.ns}`, e));
  } finally {
    $('inc-submit').disabled = false;
  }
}

// ---- polling -----------------------------------------------------------------------------

// One poll: the status, the page of counters asked, and the top view shown. An answer to a
// page or a view no longer asked is dropped (and the poll runs again).
async function refresh() {
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  const query = listQuery(), view = state.view, sizes = [], pageSize = [];
  const top = VIEWS[view] ? api('GET', `/api/top?by=${VIEWS[view].by}&limit=${TOP_ROWS}`, null, { sizes })
    : Promise.resolve(null);
  const [st, cs, tp] = await Promise.allSettled([api('GET', '/api/status', null, { sizes }),
    api('GET', query, null, { sizes: pageSize }), top]);
  state.pollBytes = [...sizes, ...pageSize].reduce((a, b) => a + b, 0);
  try {
    if (st.status === 'fulfilled') state.status = st.value;
    const byStatus = st.status === 'fulfilled' && sampleStatus(st.value, performance.now());
    if (cs.status === 'fulfilled' && query === listQuery()) {
      state.counters = cs.value;
      state.query = query;
      if (!byStatus && !(st.status === 'rejected' && state.rateFrom === 'status')) {
        sampleRate(cs.value, performance.now(), query);
      }
    } else if (query !== listQuery()) {
      state.again = true;
    }
    if (view === state.view && VIEWS[view]) {
      state.top = tp.status === 'fulfilled' ? tp.value : null;
      state.topError = tp.status === 'rejected' ? tp.reason.message : '';
    }
    renderRegions();
    if (state.view !== 'all') renderTop();
    else if (state.query === listQuery()) renderCounters();
    else if (cs.status === 'rejected') setText($('list-info'), `Cannot list: ${cs.reason.message}`, 'result warn-text');
    renderRate();
    // Live is the status and the listing; a top view that fails says so in its table.
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
  $('ns-form').addEventListener('submit', createNamespace);
  $('ns-select').addEventListener('change', () => setNamespace($('ns-select').value));
  $('cmp-form').addEventListener('submit', compare);
  $('inc-routing').addEventListener('change', () => {
    $('client-region-label').hidden = $('inc-routing').value !== 'nearest';
  });
  $('error-close').addEventListener('click', () => showError(''));
  let searchTimer;
  $('search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search($('search').value.trim()), 250);
  });
  $('search-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    clearTimeout(searchTimer);
    search($('search').value.trim());
  });
  $('page-next').addEventListener('click', nextPage);
  $('page-prev').addEventListener('click', prevPage);
  for (const b of document.querySelectorAll('.views .view')) {
    b.addEventListener('click', () => setView(b.dataset.view));
  }
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
  nsLoop();
});
