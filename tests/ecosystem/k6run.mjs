// k6run.mjs - runs one k6 script of scripts/k6/ under node, for tests/ecosystem: the
// script's own code (options, setup, every scenario's exec function or the default one,
// teardown) with a stand-in for k6's modules (k6stub/) whose HTTP calls really go out to
// 127.0.0.1 (curl). No k6 binary is needed, and no other host is ever contacted.
//
//   node k6run.mjs <script.js> [iterations]        (env: the script's own, plus
//                                                    K6RUN_SLEEP_SCALE, default 0.05)
//
// Each scenario (in the order options.scenarios lists them) runs its exec function
// `iterations` times (default 5), or the number of iterations it asks for when that is
// smaller (per-vu-iterations); VU 1. Prints one JSON object: the requests made (method,
// url, status), each check's passes and fails, each custom metric's values, the
// thresholds' metric names that are neither k6 built-ins nor defined by the script, and
// every error (exceptions, refused requests). Exit status 0 when it ran to the end.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const [script, itersArg] = process.argv.slice(2);
if (!script) {
  console.error('usage: node k6run.mjs <script.js> [iterations]');
  process.exit(2);
}
const iterations = parseInt(itersArg || '5', 10);

// k6's built-in metrics, which thresholds may name without defining them.
const BUILTIN = new Set(['checks', 'data_received', 'data_sent', 'dropped_iterations',
  'group_duration', 'http_req_blocked', 'http_req_connecting', 'http_req_duration',
  'http_req_failed', 'http_req_receiving', 'http_req_sending', 'http_req_tls_handshaking',
  'http_req_waiting', 'http_reqs', 'iteration_duration', 'iterations', 'vus', 'vus_max']);

globalThis.__k6run = {
  requests: [], checks: {}, groups: {}, metrics: {}, errors: [], scenarios: [],
  sleepScale: parseFloat(process.env.K6RUN_SLEEP_SCALE || '0.05'),
};
globalThis.__ENV = { ...process.env };
// The script's console goes to stderr (as k6's does), keeping stdout for the JSON.
for (const level of ['log', 'info', 'warn', 'debug']) {
  console[level] = (...args) => process.stderr.write(`[${level}] ${args.join(' ')}\n`);
}
globalThis.__VU = 1;
globalThis.__ITER = 0;

// The script as an ES module beside a node_modules/k6 that is the stub, so that its
// imports of 'k6', 'k6/http' and 'k6/metrics' resolve to it.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'k6run-'));
const copy = path.join(tmp, path.basename(script).replace(/\.js$/, '') + '.mjs');
let out;
try {
  fs.copyFileSync(script, copy);
  fs.mkdirSync(path.join(tmp, 'node_modules'));
  fs.symlinkSync(path.join(here, 'k6stub'), path.join(tmp, 'node_modules', 'k6'), 'dir');
  out = await runScript(await import(pathToFileURL(copy).href));
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(out, null, 1) + '\n');

function guarded(what, fn) {
  try {
    return fn();
  } catch (e) {
    globalThis.__k6run.errors.push(`${what}: ${e && e.stack ? e.stack : e}`);
    return undefined;
  }
}

async function runScript(mod) {
  const run = globalThis.__k6run;
  const options = mod.options || {};
  const data = mod.setup ? guarded('setup()', () => mod.setup()) : undefined;
  const scenarios = options.scenarios || { default: { exec: 'default' } };
  for (const [name, sc] of Object.entries(scenarios)) {
    const exec = sc.exec || 'default';
    const fn = mod[exec];
    if (typeof fn !== 'function') {
      run.errors.push(`scenario ${name}: the script exports no function '${exec}'`);
      continue;
    }
    let n = iterations;
    if (sc.executor === 'per-vu-iterations' || sc.executor === 'shared-iterations') {
      n = Math.min(n, sc.iterations || 1);
    }
    run.scenarios.push({ name, exec, iterations: n });
    for (let i = 0; i < n; i++) {
      globalThis.__ITER = i;
      guarded(`scenario ${name}, ${exec}() iteration ${i}`, () => fn(data));
    }
  }
  if (mod.teardown) guarded('teardown()', () => mod.teardown(data));

  const unknownThresholdMetrics = Object.keys(options.thresholds || {})
    .map((k) => k.replace(/\{.*$/, ''))
    .filter((m) => !BUILTIN.has(m) && !run.metrics[m]);
  return {
    options_keys: Object.keys(options),
    scenarios: run.scenarios,
    requests: run.requests,
    checks: run.checks,
    groups: run.groups,
    metrics: Object.fromEntries(Object.entries(run.metrics)
      .map(([k, v]) => [k, { type: v.type, count: v.values.length, values: v.values.slice(0, 20) }])),
    unknown_threshold_metrics: unknownThresholdMetrics,
    errors: run.errors,
  };
}
