// The "k6" module for tests/ecosystem/k6run.mjs: check, group, sleep and fail, recording
// into the run's state (globalThis.__k6run). sleep() really waits, scaled by the run's
// sleep factor, because the scripts' timing (partition, then heal) is part of what runs.
const run = () => globalThis.__k6run;

export function check(value, sets, tags) {
  let all = true;
  for (const [name, fn] of Object.entries(sets)) {
    let ok;
    try {
      ok = Boolean(typeof fn === 'function' ? fn(value) : fn);
    } catch (e) {
      ok = false;
      run().errors.push(`check '${name}' threw: ${e && e.stack ? e.stack : e}`);
    }
    const c = (run().checks[name] ||= { passes: 0, fails: 0 });
    if (ok) c.passes++; else c.fails++;
    all = all && ok;
  }
  return all;
}

export function group(name, fn) {
  run().groups[name] = (run().groups[name] || 0) + 1;
  return fn();
}

export function sleep(seconds) {
  const ms = Math.max(0, Number(seconds) * 1000 * run().sleepScale);
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function fail(message) {
  throw new Error(message);
}

export default { check, group, sleep, fail };
