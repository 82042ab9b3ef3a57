// partition-test.js - the lab's partition test against the compose stack: steady
// increments and reads through the gateway while, a while in, us-east is partitioned
// through the gateway's admin API, then healed, force-synced and checked for convergence.
// Increments must keep succeeding throughout (a partitioned region keeps serving clients;
// the gateway fails over from a region that does not answer).
//
//   docker compose run --rm lab34-k6 run /scripts/partition-test.js
//
// Env: BASE_URL (default http://lab34-gateway:8080), VUS (default 10), PARTITION_AT
// (seconds, default 15), PARTITION_FOR (seconds, default 20), COUNTERD_ADMIN_TOKEN (when
// the stack has one).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://lab34-gateway:8080';
const VUS = parseInt(__ENV.VUS || '10', 10);
const PARTITION_AT = parseFloat(__ENV.PARTITION_AT || '15');
const PARTITION_FOR = parseFloat(__ENV.PARTITION_FOR || '20');
const REGION = 'us-east';
const COUNTER = 'partition_demo';
const RUN_S = Math.ceil(PARTITION_AT + PARTITION_FOR + 15);
const JSON_PARAMS = { headers: { 'Content-Type': 'application/json' } };
const ADMIN_PARAMS = __ENV.COUNTERD_ADMIN_TOKEN
  ? { headers: { Authorization: `Bearer ${__ENV.COUNTERD_ADMIN_TOKEN}` } } : {};

const incrementOk = new Rate('increment_success');
const lagDuringPartition = new Trend('convergence_lag_during_partition');
const timeToConverge = new Trend('time_to_converge', true);

export const options = {
  scenarios: {
    load: { executor: 'constant-vus', vus: VUS, duration: `${RUN_S}s`, exec: 'load' },
    chaos: {
      executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'chaos',
      maxDuration: `${RUN_S + 30}s`,
    },
  },
  thresholds: {
    increment_success: ['rate>0.99'],
    'checks{scenario:chaos}': ['rate==1'],
  },
};

export function load() {
  const res = http.post(`${BASE_URL}/api/increment`,
    JSON.stringify({ counter_name: COUNTER, amount: 1 }), JSON_PARAMS);
  incrementOk.add(check(res, {
    'increment: status 200': (r) => r.status === 200,
    'increment: counted': (r) => r.status === 200 && r.json().counter === COUNTER,
  }));
  if (__ITER % 5 === 0) {
    const view = http.get(`${BASE_URL}/api/counter/${COUNTER}`);
    check(view, { 'read: status 200': (r) => r.status === 200 });
  }
  sleep(0.1);
}

function partition(enabled) {
  const res = http.post(`${BASE_URL}/admin/partition/${REGION}?enabled=${enabled}`, null,
    ADMIN_PARAMS);
  check(res, {
    [`partition ${enabled ? 'on' : 'off'}: status 200`]: (r) => r.status === 200,
    [`partition ${enabled ? 'on' : 'off'}: applied`]: (r) => r.status === 200 &&
      r.json().network_partition === enabled,
  });
  const status = http.get(`${BASE_URL}/api/status`);
  check(status, {
    [`status: ${enabled ? 'one region' : 'no region'} partitioned`]: (r) => r.status === 200 &&
      r.json().partitioned_count === (enabled ? 1 : 0),
  });
}

export function chaos() {
  sleep(PARTITION_AT);
  partition(true);
  sleep(PARTITION_FOR);
  const view = http.get(`${BASE_URL}/api/counter/${COUNTER}`);
  if (view.status === 200) lagDuringPartition.add(view.json().convergence.lag);
  partition(false);

  const t0 = Date.now();
  let converged = false;
  for (let i = 0; i < 40 && !converged; i++) {
    http.post(`${BASE_URL}/admin/force-sync`, null, ADMIN_PARAMS);
    const res = http.get(`${BASE_URL}/api/counter/${COUNTER}`);
    converged = res.status === 200 && res.json().convergence.converged === true &&
      res.json().healthy_regions === 3;
    if (!converged) sleep(0.25);
  }
  timeToConverge.add(Date.now() - t0);
  check(converged, { 'converged after heal and force-sync': (c) => c === true });
}
