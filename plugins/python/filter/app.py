"""The standard `filter` plugin in Python: the same config and the same results as the Rust
one (plugins/filter), as an example of a real plugin with the Python SDK.

    [config]
    project = ["ad", "ts"]           # optional: emit only these fields
    on_invalid = "dead_letter"       # or "drop": values that are not JSON objects
    [config.where]
    event = { eq = "click" }
    price = { gte = 10, lt = 100 }
    "user.country" = { in = ["DE", "FR"] }

Operators: eq, ne, in, not_in, gt, gte, lt, lte, exists, prefix. A missing field fails every
operator except `exists = false`, `ne` and `not_in`. One difference: projected values are
written back compactly by Python's json module, where the Rust plugin copies their text.
"""
import json

from sluice_plugin import DROP, KEEP, Plugin, fail, plugin

OPERATORS = "eq, ne, in, not_in, gt, gte, lt, lte, exists, prefix"
MISSING = object()


def type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return "a table"


def json_eq(a, b):
    """Numbers by value (10 equals 10.0), booleans apart from numbers, containers deeply."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_eq(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(k in b and json_eq(v, b[k]) for k, v in a.items())
    return type(a) is type(b) and a == b


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(v, operand):
    if is_num(v) and is_num(operand) or isinstance(v, str) and isinstance(operand, str):
        if isinstance(v, str):
            v, operand = v.encode(), operand.encode()  # byte-wise, as the Rust plugin
        return (v > operand) - (v < operand)
    return None


def parse_op(path, name, v):
    def wrong(expected):
        return ValueError(f"condition on '{path}': '{name}' expects {expected}, got {type_name(v)}")

    if name in ("eq", "ne"):
        return name, v
    if name in ("in", "not_in"):
        if not isinstance(v, list):
            raise wrong("a list of values")
        return name, v
    if name in ("gt", "gte", "lt", "lte"):
        if not (is_num(v) or isinstance(v, str)):
            raise wrong("a number or a string")
        return name, v
    if name == "exists":
        if not isinstance(v, bool):
            raise wrong("true or false")
        return name, v
    if name == "prefix":
        if not isinstance(v, str):
            raise wrong("a string")
        return name, v
    raise ValueError(f"condition on '{path}': unknown operator '{name}' (expected one of {OPERATORS})")


WANT = {"gt": (1,), "gte": (1, 0), "lt": (-1,), "lte": (-1, 0)}


def matches(ops, value):
    for name, x in ops:
        if name == "exists":
            ok = (value is not MISSING) == x
        elif value is MISSING:
            ok = name in ("ne", "not_in")
        elif name == "eq":
            ok = json_eq(value, x)
        elif name == "ne":
            ok = not json_eq(value, x)
        elif name == "in":
            ok = any(json_eq(value, y) for y in x)
        elif name == "not_in":
            ok = not any(json_eq(value, y) for y in x)
        elif name == "prefix":
            ok = isinstance(value, str) and value.startswith(x)
        else:
            ok = compare(value, x) in WANT[name]
        if not ok:
            return False
    return True


def lookup(obj, path):
    for name in path.split("."):
        if not isinstance(obj, dict) or name not in obj:
            return MISSING
        obj = obj[name]
    return obj


def check_path(key, path):
    if not path or any(not part for part in path.split(".")):
        raise ValueError(f"'{key}': invalid field path '{path}'")


def project(obj, paths):
    out = {}
    for path in paths:
        v = lookup(obj, path)
        if v is MISSING:
            continue
        node, names = out, path.split(".")
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = v
    return out


def kind_of(v):
    return {"a list": "an array", "a table": "an object"}.get(type_name(v), type_name(v))


@plugin
class Filter(Plugin):
    def init(self, config):
        if not isinstance(config, dict):
            raise ValueError("the config must be a table")
        self.conditions, self.project, self.on_invalid = [], None, "dead_letter"
        for key, v in config.items():
            if key == "where":
                if not isinstance(v, dict):
                    raise ValueError(f"'where' must be a table of field = {{ operator = value }}, got {type_name(v)}")
                for path, ops in v.items():
                    check_path("where", path)
                    if not isinstance(ops, dict):
                        raise ValueError(f"condition on '{path}': expected a table of operators like {{ eq = \"x\" }}, got {type_name(ops)}")
                    if not ops:
                        raise ValueError(f"condition on '{path}': no operator (expected one of {OPERATORS})")
                    parsed = [parse_op(path, n, x) for n, x in ops.items()]
                    if len(parsed) > 1 and ("exists", False) in parsed:
                        raise ValueError(f"condition on '{path}': 'exists = false' cannot be combined with other operators")
                    self.conditions.append((path, parsed))
            elif key == "project":
                if not isinstance(v, list):
                    raise ValueError(f"'project' must be a list of field paths, got {type_name(v)}")
                for p in v:
                    if not isinstance(p, str):
                        raise ValueError(f"'project' must list field paths (strings), not {type_name(p)}")
                    check_path("project", p)
                self.project = v
            elif key == "on_invalid":
                if v not in ("drop", "dead_letter"):
                    raise ValueError(f"'on_invalid' must be \"drop\" or \"dead_letter\", got {json.dumps(v)}")
                self.on_invalid = v
            else:
                raise ValueError(f"unknown key '{key}' (expected where, project, on_invalid)")

    def invalid(self, why):
        return DROP if self.on_invalid == "drop" else fail(why)

    def process(self, r):
        if r.value is None:
            return self.invalid("record has no value")
        try:
            obj = json.loads(r.value)
        except ValueError as e:
            return self.invalid(f"not JSON: {e}")
        if not isinstance(obj, dict):
            return self.invalid(f"value is {kind_of(obj)}, not a JSON object")
        if not all(matches(ops, lookup(obj, path)) for path, ops in self.conditions):
            return DROP
        if self.project is None:
            return KEEP
        value = json.dumps(project(obj, self.project), separators=(",", ":"), ensure_ascii=False)
        return r.to_output().with_value(value)
