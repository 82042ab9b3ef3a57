// counterd dashboard: polls the gateway that serves it (same origin) once a second and
// drives its API. Plain DOM, no framework; elements are created once per key (region,
// counter, node) and updated in place, so focus and clicks survive the refreshes.
'use strict';

const POLL_MS = 1000;
const ORDER = ['us-east', 'us-west', 'eu-west']; // the lab's order; other regions follow

const $ = (id) => document.getElementById(id);
const state = { regions: [], selected: null, busy: false, again: false };

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
// browser gives a JSON reviver the source text). BigInt and Number compare with < and >.
const exact = (k, v, ctx) => (typeof v === 'number' && !Number.isSafeInteger(v) && ctx &&
  /^-?\d+$/.test(ctx.source) ? BigInt(ctx.source) : v);
const maxOf = (xs) => xs.reduce((m, x) => (x > m ? x : m));
const same = (a, b) => String(a) === String(b);

function byOrder(a, b) {
  const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
  if (ia !== ib) return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  return a < b ? -1 : a > b ? 1 : 0;
}

// Calls the gateway; resolves to the JSON answer, or throws an Error whose message carries
// the API's {"error","detail"}.
async function api(method, path, body, headers) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), method === 'GET' ? 5000 : 40000);
  let res, text;
  try {
    res = await fetch(path, {
      method, body, cache: 'no-store', signal: ctl.signal,
      headers: Object.assign(body ? { 'Content-Type': 'application/json' } : {}, headers),
    });
    text = await res.text();
  } catch (e) {
    throw new Error(`${method} ${path}: ` +
      (e.name === 'AbortError' ? 'no answer in time' : 'the gateway did not answer'));
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try { data = text ? JSON.parse(text, exact) : null; } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const why = data && data.detail ? data.detail : (text || res.statusText);
    const code = data && data.error ? ` ${data.error}` : '';
    throw new Error(`${method} ${path} failed (${res.status}${code}): ${why}`);
  }
  return data;
}

function showError(msg) {
  setText($('error-text'), msg);
  $('error').hidden = !msg;
}

// ---- regions -------------------------------------------------------------------------

function renderRegions(status) {
  const box = $('regions');
  if (box.firstElementChild && !box.firstElementChild.dataset.key) box.replaceChildren();
  const names = Object.keys(status.regions || {}).sort(byOrder);
  state.regions = names;
  for (const name of names) {
    const r = status.regions[name];
    const card = keyed(box, name, () => el('article', { class: 'region', 'data-testid': `region-${name}` },
      el('h3', { text: name }),
      el('p', { class: 'node' }, 'node ', el('code', { 'data-testid': `region-${name}-node` })),
      el('p', { class: 'badges' },
        el('span', { 'data-testid': `region-${name}-status` }), ' ',
        el('span', { 'data-testid': `region-${name}-partition` })),
      el('p', { class: 'actions' },
        el('button', { type: 'button', 'data-testid': `partition-${name}`, text: `Partition ${name}`,
          onclick: () => partition(name, true) }),
        el('button', { type: 'button', 'data-testid': `heal-${name}`, text: `Heal ${name}`,
          onclick: () => partition(name, false) }))));
    const healthy = r.status === 'healthy';
    const q = (id) => card.querySelector(`[data-testid="region-${name}-${id}"]`);
    setText(q('node'), r.node_id || '—');
    setText(q('status'), healthy ? 'healthy' : (r.status || 'unhealthy'), healthy ? 'badge ok' : 'badge bad');
    const part = r.network_partition;
    setText(q('partition'), part === true ? 'partitioned' : part === false ? 'connected' : 'unknown',
      part === true ? 'badge warn' : part === false ? 'badge ok' : 'badge');
    card.classList.toggle('down', !healthy);
    card.classList.toggle('cut', part === true);
    card.querySelector(`[data-testid="partition-${name}"]`).disabled = part === true;
    card.querySelector(`[data-testid="heal-${name}"]`).disabled = part === false;
  }
  prune(box, names);
}

async function admin(label, path, describe) {
  try {
    const res = await api('POST', path);
    showError('');
    setText($('admin-result'), describe(res));
  } catch (e) {
    showError(`${label}: ${e.message}`);
  }
  refresh();
}

function partition(name, enabled) {
  admin(enabled ? `Partition ${name}` : `Heal ${name}`,
    `/admin/partition/${encodeURIComponent(name)}?enabled=${enabled}`,
    (r) => `${r.region || name} is ${r.network_partition ? 'partitioned' : 'healed'}.`);
}

// ---- counters table ------------------------------------------------------------------

function renderCounters(all) {
  const regions = [...new Set([...state.regions, ...Object.keys(all.regions || {})])].sort(byOrder);
  const head = $('counters-head');
  const want = ['Counter', ...regions, 'Regions agree?'];
  if ([...head.children].map((th) => th.textContent).join('|') !== want.join('|')) {
    head.replaceChildren(...want.map((t, i) =>
      el('th', { scope: 'col', text: t, class: i > 0 && i <= regions.length ? 'num' : '' })));
    $('counters-body').replaceChildren(); // columns changed: rebuild rows
  }
  const body = $('counters-body');
  const names = [...(all.counter_names || [])].sort();
  for (const name of names) {
    const row = keyed(body, name, () => el('tr', { 'data-testid': `counter-row-${name}` },
      el('th', { scope: 'row' }, el('button', { type: 'button', class: 'link',
        'data-testid': `select-${name}`, text: name, onclick: () => select(name) })),
      ...regions.map((r) => el('td', { class: 'num', 'data-testid': `counter-${name}-${r}` })),
      el('td', {}, el('span', { 'data-testid': `counter-${name}-agree` }))));
    const totals = regions.map((r) => {
      const reg = all.regions && all.regions[r];
      if (!reg) return null; // that region did not answer
      const c = reg.counters && reg.counters[name];
      return c ? c.total_count : 0;
    });
    const known = totals.filter((t) => t !== null);
    const max = known.length ? maxOf(known) : 0;
    const agree = known.length > 0 && known.every((t) => same(t, known[0]));
    regions.forEach((r, i) => {
      const td = row.querySelector(`[data-testid="counter-${name}-${r}"]`);
      const t = totals[i];
      setText(td, t === null ? 'no answer' : t, t === null ? 'num muted' : t < max ? 'num behind' : 'num');
    });
    const partial = known.length < regions.length;
    setText(row.querySelector(`[data-testid="counter-${name}-agree"]`),
      agree ? (partial ? 'yes (of those answering)' : 'yes') : 'no: diverged',
      agree ? 'badge ok' : 'badge warn');
    row.classList.toggle('diverged', !agree);
    row.querySelector('button').setAttribute('aria-pressed', String(name === state.selected));
  }
  prune(body, names);
  if (!names.length) {
    body.append(el('tr', { 'data-key': '' }, el('td', { colspan: String(want.length), class: 'muted',
      text: 'No counters yet: increment one above.' })));
  }
}

// ---- global view ---------------------------------------------------------------------

function select(name) {
  state.selected = name;
  history.replaceState(null, '', `#counter=${name}`); // names are URL-safe
  refresh();
}

function renderGlobal(g) {
  $('global').hidden = false;
  setText($('global-name'), g.counter);
  setText($('global-count'), g.global_count);
  const conv = g.convergence || {};
  setText($('global-converged'), conv.converged ? 'converged' : 'not converged',
    conv.converged ? 'badge ok' : 'badge warn');
  setText($('global-lag'), `${conv.lag} (max ${conv.max_count}, min ${conv.min_count})`);
  setText($('global-healthy'), `${g.healthy_regions} of ${g.total_regions}`);
  setText($('global-time'), `${g.query_time_ms} ms / ${g.gateway_latency_ms} ms`);

  const regions = [...new Set([...state.regions, ...Object.keys(g.regions || {})])].sort(byOrder);
  const nodes = [...new Set(Object.values(g.regions || {}).flatMap((r) => Object.keys(r.nodes || {})))].sort();
  const top = {};
  for (const n of nodes) top[n] = maxOf(Object.values(g.regions).map((r) => (r.nodes || {})[n] || 0));
  $('global-head').replaceChildren(...['Region', 'Total', 'Local', ...nodes.map((n) => `nodes[${n}]`)]
    .map((t, i) => el('th', { scope: 'col', text: t, class: i ? 'num' : '' })));
  $('global-body').replaceChildren(...regions.map((r) => {
    const v = g.regions[r];
    if (!v) {
      return el('tr', { 'data-testid': `global-region-${r}` }, el('th', { scope: 'row', text: r }),
        el('td', { colspan: String(2 + nodes.length), class: 'muted', text: 'no answer' }));
    }
    return el('tr', { 'data-testid': `global-region-${r}`, class: v.total_count < conv.max_count ? 'diverged' : '' },
      el('th', { scope: 'row', text: r }),
      el('td', { class: 'num', 'data-testid': `global-region-${r}-total`, text: v.total_count }),
      el('td', { class: 'num', text: v.local_count }),
      ...nodes.map((n) => {
        const c = (v.nodes || {})[n];
        return el('td', { class: (c || 0) < top[n] ? 'num behind' : 'num', text: c === undefined ? '–' : c });
      }));
  }));
}

// ---- increment -----------------------------------------------------------------------

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
    const r = await api('POST', '/api/increment', body, headers);
    showError('');
    out.replaceChildren('Routed to ', el('strong', { 'data-testid': 'inc-routed', text: r.region }),
      ` (${r.node_id}, ${r.routed_to_endpoint}) by policy ${r.routing} in `,
      el('span', { 'data-testid': 'inc-latency', text: `${r.latency_ms} ms` }),
      `: ${r.region} now counts ${r.total_count} for ${r.counter}.`,
      r.duplicate ? ' (duplicate: counted once)' : '',
      r.failover_from ? ` Failed over from ${[].concat(r.failover_from).join(', ')}.` : '');
    select(r.counter || name);
  } catch (e) {
    showError(`Increment: ${e.message}`);
  } finally {
    $('inc-submit').disabled = false;
  }
}

// ---- polling -------------------------------------------------------------------------

async function refresh() {
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  const sel = state.selected;
  const [st, cs, gv] = await Promise.allSettled([
    api('GET', '/api/status'),
    api('GET', '/api/counters'),
    sel ? api('GET', `/api/counter/${encodeURIComponent(sel)}`) : Promise.resolve(null),
  ]);
  try {
    if (st.status === 'fulfilled') renderRegions(st.value);
    if (cs.status === 'fulfilled') renderCounters(cs.value);
    if (gv.status === 'fulfilled' && gv.value && sel === state.selected) renderGlobal(gv.value);
    const failed = [st, cs, gv].filter((p) => p.status === 'rejected').map((p) => p.reason.message);
    const live = $('live');
    document.body.classList.toggle('stale', failed.length > 0);
    if (failed.length) setText(live, `Not live: ${failed.join('; ')}`, 'bad');
    else setText(live, `Live, updated ${new Date().toLocaleTimeString()}`, 'ok');
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
  const m = /^#counter=([A-Za-z0-9_.:-]{1,200})$/.exec(location.hash); // API.md's names
  if (m) state.selected = m[1];
  $('inc-form').addEventListener('submit', increment);
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
  loop();
});
