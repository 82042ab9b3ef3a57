// basic.js - the lab's basic k6 load test against the compose stack: increments through
// the gateway, each iteration with the next routing policy (random, round-robin, sticky,
// each region by name, nearest with an X-Client-Region header), and reads of the global
// view and the status. Checks every answer's fields (API.md, "Gateway").
//
//   docker compose run --rm lab34-k6 run /scripts/basic.js
//
// Env: BASE_URL (default http://lab34-gateway:8080), VUS (default 10), DURATION (the
// steady stage, default 30s).
import http from 'k6/http';
import { check, group, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://lab34-gateway:8080';
const VUS = parseInt(__ENV.VUS || '10', 10);
const DURATION = __ENV.DURATION || '30s';

const ROUTING = ['random', 'round-robin', 'sticky', 'us-east', 'us-west', 'eu-west', 'nearest'];
const COUNTERS = ['views', 'likes', 'shares'];
const JSON_HEADERS = { 'Content-Type': 'application/json' };

const incrementOk = new Rate('increment_success');
const incrementLatency = new Trend('increment_latency', true);
const readLatency = new Trend('read_latency', true);
const routedTo = new Counter('routed_to_region');

export const options = {
  stages: [
    { duration: '10s', target: VUS },
    { duration: DURATION, target: VUS },
    { duration: '5s', target: 0 },
  ],
  thresholds: {
    http_req_failed: ['rate<0.01'],
    increment_success: ['rate>0.99'],
    increment_latency: ['p(95)<500'],
    read_latency: ['p(95)<1000'],
  },
};

export default function () {
  const policy = ROUTING[(__VU + __ITER) % ROUTING.length];
  const name = COUNTERS[__ITER % COUNTERS.length];

  group('increment', () => {
    const headers = policy === 'nearest'
      ? Object.assign({ 'X-Client-Region': 'eu-central' }, JSON_HEADERS) : JSON_HEADERS;
    const res = http.post(`${BASE_URL}/api/increment`,
      JSON.stringify({ counter_name: name, amount: 1, routing: policy }),
      { headers, tags: { routing: policy } });
    const body = res.status === 200 ? res.json() : {};
    const ok = check(res, {
      'increment: status 200': (r) => r.status === 200,
      'increment: counted': () => body.counter === name && body.local_count >= 1 &&
        body.total_count >= body.local_count,
      'increment: says where it went': () => typeof body.region === 'string' &&
        typeof body.routed_to_endpoint === 'string' && body.routing === policy,
      'increment: region policy honoured': () =>
        !['us-east', 'us-west', 'eu-west'].includes(policy) || body.region === policy,
    });
    incrementOk.add(ok);
    incrementLatency.add(res.timings.duration);
    if (body.region) routedTo.add(1, { region: body.region });
  });

  group('read', () => {
    const res = http.get(`${BASE_URL}/api/counter/${name}`, { tags: { name: 'counter' } });
    const body = res.status === 200 ? res.json() : {};
    check(res, {
      'read: status 200': (r) => r.status === 200,
      'read: global view': () => body.counter === name && body.global_count >= 1 &&
        typeof body.convergence === 'object' && body.total_regions === 3,
    });
    readLatency.add(res.timings.duration);
    if (__ITER % 10 === 0) {
      const status = http.get(`${BASE_URL}/api/status`);
      check(status, {
        'status: every region known': (r) => r.status === 200 &&
          Object.keys(r.json().regions || {}).length === 3,
      });
    }
  });

  sleep(0.1 + Math.random() * 0.2);
}
