// The "k6/metrics" module for tests/ecosystem/k6run.mjs: Counter, Gauge, Rate and Trend
// record every value added, by metric name, so the test can see that each custom metric
// the thresholds name exists and got values.
const run = () => globalThis.__k6run;

class Metric {
  constructor(type, name, isTime) {
    if (typeof name !== 'string' || !/^[A-Za-z0-9_]{1,128}$/.test(name)) {
      throw new Error(`invalid k6 metric name ${JSON.stringify(name)}`);
    }
    if (run().metrics[name]) throw new Error(`metric ${name} is defined twice`);
    this.name = name;
    run().metrics[name] = { type, isTime: Boolean(isTime), values: [] };
  }

  add(value, tags) {
    if (typeof value !== 'number' && typeof value !== 'boolean') {
      throw new Error(`${this.name}.add(${JSON.stringify(value)}): not a number or boolean`);
    }
    run().metrics[this.name].values.push(Number(value));
    return true;
  }
}

export class Counter extends Metric { constructor(n, t) { super('counter', n, t); } }
export class Gauge extends Metric { constructor(n, t) { super('gauge', n, t); } }
export class Rate extends Metric { constructor(n, t) { super('rate', n, t); } }
export class Trend extends Metric { constructor(n, t) { super('trend', n, t); } }

export default { Counter, Gauge, Rate, Trend };
