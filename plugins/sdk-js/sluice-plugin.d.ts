// Types of the sluice plugin SDK for JavaScript and TypeScript (see sluice-plugin.js).
export type Bytes = Uint8Array;
export class Record {
  value?: Bytes; key?: Bytes; headers: [string, Bytes][];
  topic: string; partition: number; offset: number; timestamp: number;
  constructor(value?: string | Bytes, opts?: { key?: string | Bytes; headers?: [string, string | Bytes][]; topic?: string; partition?: number; offset?: number; timestamp?: number });
  valueStr(): string | undefined;
  keyStr(): string | undefined;
  header(name: string): Bytes | undefined;
  headerStr(name: string): string | undefined;
  json(): any;
  toOutput(): Output;
}
export class Output {
  constructor(value?: string | Bytes, opts?: { key?: string | Bytes; headers?: [string, string | Bytes][]; topic?: string; timestamp?: number });
  withValue(v: string | Bytes): this;
  withKey(k: string | Bytes): this;
  toTopic(t: string): this;
  header(name: string, v: string | Bytes): this;
  withTimestamp(ms: number): this;
}
export type Outcome = { tag: "keep" } | { tag: "drop" } | { tag: "replace"; val: unknown[] } | { tag: "fail"; val: string } | { tag: "retry"; val: string };
export type Result = Outcome | Output | Output[] | boolean | null | undefined;
export const KEEP: Outcome;
export const DROP: Outcome;
export function emit(...outputs: (Output | Output[])[]): Outcome;
export function fail(reason: unknown): Outcome;
export function retry(reason: unknown): Outcome;
export interface PluginDef<S = any> {
  init?(config: any): void;
  process(r: Record): Result;
  tick?(nowMs: number): Output[];
  onWatermark?(watermarkMs: number): Output[];
}
export type Instance<S> = { state: S; [field: string]: any };
export function filter(fn: (r: Record) => boolean): PluginDef;
export function map(fn: (r: Record) => Result): PluginDef;
export function plugin<S = any>(def: PluginDef<S> & ThisType<Instance<S>>): PluginDef<S>;
export const log: { trace(...p: unknown[]): void; debug(...p: unknown[]): void; info(...p: unknown[]): void; warn(...p: unknown[]): void; error(...p: unknown[]): void };
export function task(): { pipeline: string; topic: string; partition: number; retry: boolean };
/** `tick` has nothing to do until more input: not ticked again until the next record. */
export function pauseTicks(): void;
