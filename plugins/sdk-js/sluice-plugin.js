// Write sluice processing plugins in JavaScript or TypeScript.
//
// A plugin sees the records of one input partition, in offset order, and says what becomes of
// each: keep it, drop it, emit other records instead, or send it to the dead-letter topic. Its
// module (app.js or app.ts) default-exports what `filter`, `map` or `plugin` return, and
// `sluice plugin build` makes it a WebAssembly component with ComponentizeJS. The same shape
// as the Rust SDK:
//
//   import { filter } from "sluice-plugin";
//   export default filter(r => r.valueStr()?.includes("buy") ?? false);
//
// A map returns an Output, null (drop), an array of Outputs, or an outcome (KEEP, DROP,
// emit(...), fail(reason), retry(reason)); a thrown error sends the record to the
// dead-letter topic with the error as its reason.
//
// Config and state: `plugin({ init(config) {...}, process(r) {...}, tick(nowMs),
// onWatermark(ms) })`; `this.state` is plain data (JSON), snapshotted at the host's
// checkpoints and restored after a restart or a hot reload. The two rules for exactly-once
// output are the Rust SDK's: `process` and `onWatermark` depend only on `this.state` and their
// arguments (the plugin's clock stands still and its randomness is seeded), and `tick`
// changes state `process` reads only in a call that returns output.
import { log as hostLog, task as hostTask, pauseTicks as hostPauseTicks } from "sluice:plugin/host@0.1.3";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function bytes(v) {
  if (v === null || v === undefined) return undefined;
  if (typeof v === "string") return encoder.encode(v);
  if (v instanceof Uint8Array) return v;
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (Array.isArray(v)) return Uint8Array.from(v);
  throw new TypeError(`expected a string or bytes, got ${Object.prototype.toString.call(v)}`);
}

function text(b) {
  if (b === null || b === undefined) return undefined;
  try {
    return decoder.decode(b);
  } catch (_) {
    return undefined;
  }
}

/** One input record. Offsets and timestamps are Numbers (exact below 2^53). */
export class Record {
  constructor(value, { key, headers = [], topic = "", partition = 0, offset = 0, timestamp = 0 } = {}) {
    this.value = bytes(value);
    this.key = bytes(key);
    this.headers = headers.map(([n, v]) => [n, bytes(v)]);
    this.topic = topic;
    this.partition = partition;
    this.offset = offset;
    this.timestamp = timestamp;
  }
  valueStr() { return text(this.value); }
  keyStr() { return text(this.key); }
  header(name) { const h = this.headers.find(([n]) => n === name); return h ? h[1] : undefined; }
  headerStr(name) { return text(this.header(name)); }
  json() {
    if (this.value === undefined) throw new Error("record has no value");
    return JSON.parse(decoder.decode(this.value));
  }
  toOutput() {
    return new Output(this.value, { key: this.key, headers: [...this.headers], timestamp: this.timestamp });
  }
}

/** A record to emit; without toTopic it goes to the pipeline's output topic. */
export class Output {
  constructor(value, { key, headers = [], topic, timestamp } = {}) {
    this.value = bytes(value);
    this.key = bytes(key);
    this.headers = headers.map(([n, v]) => [n, bytes(v)]);
    this.topic = topic;
    this.timestamp = timestamp;
  }
  withValue(v) { this.value = bytes(v); return this; }
  withKey(k) { this.key = bytes(k); return this; }
  toTopic(t) { this.topic = t; return this; }
  header(name, v) { this.headers.push([name, bytes(v)]); return this; }
  withTimestamp(ms) { this.timestamp = ms; return this; }
  wit() {
    return {
      topic: this.topic,
      key: this.key,
      value: this.value,
      headers: this.headers.map(([n, v]) => [n, v ?? new Uint8Array()]),
      timestamp: this.timestamp === undefined || this.timestamp === null ? undefined : BigInt(this.timestamp),
    };
  }
}

export const KEEP = Object.freeze({ tag: "keep" });
export const DROP = Object.freeze({ tag: "drop" });

/** Emit these records in the input record's place (none, one or many). */
export function emit(...outputs) {
  return { tag: "replace", val: outputs.flat().map(o => o.wit()) };
}

/** Send the record to the dead-letter topic with this reason. */
export function fail(reason) {
  return { tag: "fail", val: String(reason) };
}

/** Try the record again later; after its last attempt it is dead-lettered with this reason. */
export function retry(reason) {
  return { tag: "retry", val: String(reason) };
}

/** Keep the records fn returns true for. */
export function filter(fn) {
  return { process: r => (fn(r) ? KEEP : DROP) };
}

/** fn(record) -> Output | null | Output[] | outcome. */
export function map(fn) {
  return { process: fn };
}

/** A plugin with config and state: { init, process, tick, onWatermark }. */
export function plugin(def) {
  return def;
}

const LEVELS = ["trace", "debug", "info", "warn", "error"];
export const log = Object.fromEntries(LEVELS.map(l => [l, (...parts) => hostLog(l, parts.join(" "))]));

/** Where this instance runs: { pipeline, topic, partition, retry }. */
export function task() {
  return hostTask();
}

/** `tick` has nothing to do until more input (no window open): the host stops ticking this
 * instance until its next record. A plugin without `tick` is paused this way. */
export function pauseTicks() {
  hostPauseTicks();
}

function isOutcome(x) {
  return x !== null && typeof x === "object" && typeof x.tag === "string" && !(x instanceof Output);
}

function outcome(result) {
  if (result === null || result === undefined || result === false) return DROP;
  if (result === true) return KEEP;
  if (result instanceof Output) return { tag: "replace", val: [result.wit()] };
  if (Array.isArray(result)) return emit(result);
  if (isOutcome(result)) return result;
  return fail(`process returned ${typeof result}, not an outcome or Output`);
}

function reason(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function outputs(list) {
  return (list ?? []).map(o => o.wit());
}

/** The component's exports for a plugin definition (the build's entry calls this). */
export function exportsOf(def) {
  let self = null;
  return {
    init(config) {
      self = Object.create(def);
      self.state = undefined;
      try {
        if (typeof def.init === "function") def.init.call(self, JSON.parse(config));
      } catch (e) {
        throw reason(e);
      }
    },
    process(batch) {
      return batch.records.map(w => {
        try {
          const r = new Record(w.value, {
            key: w.key, headers: w.headers, topic: batch.topic, partition: batch.partition,
            offset: Number(w.offset), timestamp: Number(w.timestamp),
          });
          return outcome(self.process(r));
        } catch (e) {
          return fail(reason(e));
        }
      });
    },
    tick(nowMs) {
      if (typeof self.tick === "function") return outputs(self.tick(Number(nowMs)));
      hostPauseTicks();
      return [];
    },
    onWatermark(ms) {
      return typeof self.onWatermark === "function" ? outputs(self.onWatermark(Number(ms))) : [];
    },
    snapshot() {
      return self.state === undefined ? new Uint8Array() : encoder.encode(JSON.stringify(self.state));
    },
    restore(state) {
      if (state.length === 0) return;
      try {
        self.state = JSON.parse(decoder.decode(state));
      } catch (e) {
        throw "cannot restore the state: " + reason(e);
      }
    },
  };
}
