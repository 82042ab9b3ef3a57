// The "k6/http" module for tests/ecosystem/k6run.mjs: each request really goes out, with
// curl (k6's HTTP calls are synchronous, and so is spawnSync), and is recorded. Only
// 127.0.0.1 is ever contacted: a request to any other host is refused and recorded as an
// error, so a script that ignores its BASE_URL cannot reach the compose host names.
import { spawnSync } from 'node:child_process';

const run = () => globalThis.__k6run;
const MARK = '\n__k6run_status__';

function seconds(timeout) {
  if (timeout === undefined) return 30;
  if (typeof timeout === 'number') return timeout / 1000;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(String(timeout));
  if (!m) throw new Error(`bad timeout ${JSON.stringify(timeout)}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60 }[m[2]];
}

function request(method, url, body, params = {}) {
  const rec = { method, url, status: 0 };
  run().requests.push(rec);
  let parsed;
  try {
    parsed = new URL(url);
  } catch (e) {
    run().errors.push(`${method} ${url}: not a URL`);
    return response(rec, '', 0, 'bad url');
  }
  if (parsed.hostname !== '127.0.0.1') {
    run().errors.push(`${method} ${url}: refused, only 127.0.0.1 may be contacted`);
    return response(rec, '', 0, 'refused');
  }
  const args = ['-sS', '-X', method, '-m', String(Math.min(seconds(params.timeout), 60)),
    '-w', `${MARK}%{http_code} %{time_total}`];
  for (const [k, v] of Object.entries(params.headers || {})) args.push('-H', `${k}: ${v}`);
  let input;
  if (body !== null && body !== undefined) {
    if (typeof body !== 'string') throw new Error(`${method} ${url}: only string bodies are supported`);
    args.push('--data-binary', '@-');
    input = body;
  }
  args.push(url);
  const p = spawnSync('curl', args, { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  const out = p.stdout || '';
  const at = out.lastIndexOf(MARK);
  if (p.status !== 0 || at < 0) {
    return response(rec, '', 0, (p.stderr || `curl exited ${p.status}`).trim());
  }
  const [code, secs] = out.slice(at + MARK.length).trim().split(' ');
  rec.status = Number(code);
  return response(rec, out.slice(0, at), Number(secs) * 1000, '');
}

function response(rec, body, durationMs, error) {
  return {
    status: rec.status,
    url: rec.url,
    body,
    error,
    timings: { duration: durationMs },
    request: { method: rec.method, url: rec.url },
    json(selector) {
      if (selector !== undefined) throw new Error('json(selector) is not supported by the stub');
      return JSON.parse(body);
    },
  };
}

const http = {
  request,
  get: (url, params) => request('GET', url, null, params),
  head: (url, params) => request('HEAD', url, null, params),
  del: (url, body, params) => request('DELETE', url, body, params),
  post: (url, body, params) => request('POST', url, body, params),
  put: (url, body, params) => request('PUT', url, body, params),
  patch: (url, body, params) => request('PATCH', url, body, params),
};

export { request };
export const get = http.get;
export const post = http.post;
export default http;
