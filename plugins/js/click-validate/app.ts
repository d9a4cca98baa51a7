// The click example's validation stage in TypeScript: the standard dead-letter-router
// (plugins/dead-letter-router, Rust) rewritten with the JavaScript SDK, with the same config
// and the same results. Each record's value must be a JSON object with the required fields,
// of the required types; an invalid one goes to the dead-letter topic with a precise reason
// ("field 'ts' is a string, expected integer"), a valid one to the output or to the topic
// [config.routes] names for its route_field.
//
// One difference: a number's text is not kept by JSON.parse, so a reason quotes 1.50 as 1.5.
import { DROP, KEEP, fail, plugin, Record } from "sluice-plugin";

const TYPE_NAMES: [string, number][] = [
  ["string", 1], ["number", 2], ["integer", 4], ["boolean", 8],
  ["object", 16], ["array", 32], ["null", 64], ["any", 127],
];
const ANY = 127, NUMBER = 2, INTEGER = 4;
const MISSING = Symbol("missing");

type Route = { kind: "output" } | { kind: "drop" } | { kind: "dead_letter" } | { kind: "topic"; topic: string };
type Rule = { path: string; types: number; required: boolean };

function parseTypes(spec: string): number {
  let bits = 0;
  for (const name of spec.split("|").map(s => s.trim())) {
    const t = TYPE_NAMES.find(([n]) => n === name);
    if (!t) throw new Error(`unknown type '${name}' (expected string, number, integer, boolean, object, array, null or any; several joined with |)`);
    bits |= t[1];
  }
  return bits;
}

function describe(bits: number): string {
  if (bits === ANY) return "any";
  return TYPE_NAMES.slice(0, 7)
    .filter(([n, b]) => bits & b && !(n === "integer" && bits & NUMBER))
    .map(([n]) => n)
    .join(" or ");
}

function kind(v: unknown): [string, number] {
  if (v === null) return ["null", 64];
  if (Array.isArray(v)) return ["an array", 32];
  switch (typeof v) {
    case "string": return ["a string", 1];
    case "boolean": return ["a boolean", 8];
    case "number": return ["a number", 2];
    default: return ["an object", 16];
  }
}

function check(bits: number, v: unknown): string | null {
  let [name, bit] = kind(v);
  if (typeof v === "number") {
    if (bits & NUMBER) return null;
    if (Number.isInteger(v)) bit = INTEGER;
    else if (bits & INTEGER) return `is a number with a fraction (${v}), expected ${describe(bits)}`;
  }
  return bits & bit ? null : `is ${name}, expected ${describe(bits)}`;
}

function lookup(obj: any, path: string): unknown {
  for (const name of path.split(".")) {
    if (obj === null || typeof obj !== "object" || Array.isArray(obj) || !Object.hasOwn(obj, name)) return MISSING;
    obj = obj[name];
  }
  return obj;
}

const validTopic = (t: string) => t.length > 0 && t.length <= 249 && t !== "." && t !== ".." && /^[A-Za-z0-9._-]+$/.test(t);

function parseRoute(key: string, v: unknown): Route {
  if (typeof v !== "string") throw new Error(`'${key}' must be a topic name, "output", "drop" or "dead_letter", got ${JSON.stringify(v)}`);
  if (v === "output" || v === "drop" || v === "dead_letter") return { kind: v };
  if (!validTopic(v)) throw new Error(`'${key}': '${v}' is not a valid topic name (letters, digits, '.', '_', '-'; at most 249)`);
  return { kind: "topic", topic: v };
}

function rules(key: string, v: unknown, required: boolean): Rule[] {
  if (Array.isArray(v) && required) return v.map(p => {
    if (typeof p !== "string") throw new Error(`'${key}' must list field paths (strings), not ${JSON.stringify(p)}`);
    return { path: p, types: ANY, required };
  });
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error(`'${key}' must be a table of field = "type", got ${JSON.stringify(v)}`);
  return Object.entries(v).map(([path, spec]) => {
    if (typeof spec !== "string") throw new Error(`'${key}' field '${path}': the type must be a string like "integer", got ${JSON.stringify(spec)}`);
    try {
      return { path, types: parseTypes(spec), required };
    } catch (e) {
      throw new Error(`'${key}' field '${path}': ${(e as Error).message}`);
    }
  });
}

function kindName(v: unknown): string {
  return kind(v)[0];
}

export default plugin({
  init(config: any) {
    this.rules = [] as Rule[];
    this.routeField = null as string | null;
    this.routes = new Map<string, Route>();
    this.defaultRoute = { kind: "output" } as Route;
    for (const [key, v] of Object.entries(config)) {
      if (key === "required") this.rules.push(...rules(key, v, true));
      else if (key === "optional") this.rules.push(...rules(key, v, false));
      else if (key === "route_field") {
        if (typeof v !== "string") throw new Error(`'route_field' must be a field path, got ${JSON.stringify(v)}`);
        this.routeField = v;
      } else if (key === "routes") {
        if (v === null || typeof v !== "object") throw new Error(`'routes' must be a table of value = "topic", got ${JSON.stringify(v)}`);
        for (const [value, target] of Object.entries(v as object)) this.routes.set(value, parseRoute(`routes.${value}`, target));
      } else if (key === "default_route") this.defaultRoute = parseRoute(key, v);
      else throw new Error(`unknown key '${key}' (expected required, optional, route_field, routes, default_route)`);
    }
    this.rules.sort((a: Rule, b: Rule) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    if (this.routes.size && this.routeField === null) throw new Error("'routes' needs 'route_field': the field whose value picks the route");
  },

  process(r: Record) {
    if (r.value === undefined) return fail("record has no value");
    let obj: unknown;
    try {
      obj = r.json();
    } catch (e) {
      return fail(`not JSON: ${(e as Error).message}`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return fail(`value is ${kindName(obj)}, not a JSON object`);
    const problems: string[] = [];
    for (const rule of this.rules as Rule[]) {
      const v = lookup(obj, rule.path);
      if (v === MISSING) {
        if (rule.required) problems.push(`field '${rule.path}' is missing`);
        continue;
      }
      const why = check(rule.types, v);
      if (why) problems.push(`field '${rule.path}' ${why}`);
    }
    if (problems.length) return fail(problems.join("; "));
    let route: Route = this.defaultRoute;
    if (this.routeField === null) {
      if (route.kind === "dead_letter") return fail("routed to the dead-letter topic (default_route)");
    } else {
      const v = lookup(obj, this.routeField);
      const key = typeof v === "string" ? v : typeof v === "number" || typeof v === "boolean" ? String(v) : null;
      const routed = key === null ? undefined : this.routes.get(key);
      route = routed ?? this.defaultRoute;
      if (route.kind === "dead_letter") {
        if (key !== null && routed) return fail(`${this.routeField} '${key}' is routed to the dead-letter topic`);
        if (key !== null) return fail(`no route for ${this.routeField} '${key}'`);
        return fail(`no route: field '${this.routeField}' is missing or not a string, number or boolean`);
      }
    }
    switch (route.kind) {
      case "output": return KEEP;
      case "drop": return DROP;
      case "topic": return r.toOutput().toTopic(route.topic);
    }
    return fail("routed to the dead-letter topic");
  },
});
