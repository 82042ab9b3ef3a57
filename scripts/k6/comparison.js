// comparison.js - the lab's consistency comparison under load, against the compose stack:
// eventual increments (one region write through the gateway) and strong increments (the
// strong service acknowledges after a majority of replicas accepted) at the same time,
// each with its own latency trend; at the end the gateway's own comparison
// (POST /api/compare) runs once and its conclusion is logged.
//
//   docker compose run --rm lab34-k6 run /scripts/comparison.js
//
// Env: BASE_URL (default http://lab34-gateway:8080), STRONG_URL (default
// http://lab34-counter-consistent:8004), VUS (per side, default 5), DURATION (default 30s),
// ITERATIONS (of the final /api/compare, default 30).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://lab34-gateway:8080';
const STRONG_URL = __ENV.STRONG_URL || 'http://lab34-counter-consistent:8004';
const VUS = parseInt(__ENV.VUS || '5', 10);
const DURATION = __ENV.DURATION || '30s';
const ITERATIONS = parseInt(__ENV.ITERATIONS || '30', 10);
const JSON_PARAMS = { headers: { 'Content-Type': 'application/json' } };

const eventualLatency = new Trend('eventual_latency', true);
const strongLatency = new Trend('strong_latency', true);
const eventualOk = new Rate('eventual_success');
const strongOk = new Rate('strong_success');

export const options = {
  scenarios: {
    eventual: { executor: 'constant-vus', vus: VUS, duration: DURATION, exec: 'eventual' },
    strong: { executor: 'constant-vus', vus: VUS, duration: DURATION, exec: 'strong' },
  },
  thresholds: {
    eventual_success: ['rate>0.99'],
    strong_success: ['rate>0.99'],
    eventual_latency: ['p(95)<500'],
    strong_latency: ['p(95)<2000'],
  },
};

export function eventual() {
  const res = http.post(`${BASE_URL}/api/increment`,
    JSON.stringify({ counter_name: 'compare_eventual', amount: 1 }), JSON_PARAMS);
  const body = res.status === 200 ? res.json() : {};
  eventualOk.add(check(res, {
    'eventual: status 200': (r) => r.status === 200,
    'eventual: counted in one region': () => body.counter === 'compare_eventual' &&
      typeof body.region === 'string' && body.local_count >= 1,
  }));
  eventualLatency.add(res.timings.duration);
  sleep(0.05);
}

export function strong() {
  const res = http.post(`${STRONG_URL}/increment`,
    JSON.stringify({ counter_name: 'compare_strong', amount: 1 }), JSON_PARAMS);
  const body = res.status === 200 ? res.json() : {};
  strongOk.add(check(res, {
    'strong: status 200': (r) => r.status === 200,
    'strong: acknowledged by a quorum': () => body.counter === 'compare_strong' &&
      body.consistency === 'strong' && body.value >= 1 &&
      typeof body.coordination_delay_ms === 'number',
  }));
  strongLatency.add(res.timings.duration);
  sleep(0.05);
}

// After the load: the strong counter's value is final, and the gateway's own comparison.
export function teardown() {
  const value = http.get(`${STRONG_URL}/counter/compare_strong`);
  check(value, {
    'strong read: latest value': (r) => r.status === 200 && r.json().consistency === 'strong' &&
      r.json().value >= 1,
  });
  const res = http.post(`${BASE_URL}/api/compare`,
    JSON.stringify({ counter_name: 'benchmark', iterations: ITERATIONS }),
    Object.assign({ timeout: '120s' }, JSON_PARAMS));
  const body = res.status === 200 ? res.json() : {};
  check(res, {
    'compare: status 200': (r) => r.status === 200,
    'compare: both sides measured': () => body.iterations === ITERATIONS &&
      body.eventual_consistency.p50_ms > 0 && body.strong_consistency.p50_ms > 0,
  });
  if (body.conclusion) {
    console.log(`POST /api/compare (${ITERATIONS} iterations): ${body.conclusion}; ` +
      `eventual p50 ${body.eventual_consistency.p50_ms} ms, ` +
      `strong p50 ${body.strong_consistency.p50_ms} ms`);
  }
}
