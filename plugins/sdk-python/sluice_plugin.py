"""Write sluice processing plugins in Python.

A plugin sees the records of one input partition, in offset order, and says what becomes of
each: keep it, drop it, emit other records instead, or send it to the dead-letter topic. It is
built into a WebAssembly component with componentize-py (`sluice plugin build DIR`), and runs
in the broker (or a `sluice worker`) like a Rust plugin. The same shape as the Rust SDK:

The plugin is the module `app` (app.py) beside this one; this module is the component's
entry and imports it. A filter is one function::

    from sluice_plugin import filter

    @filter
    def buys(r):
        return "buy" in (r.value_str() or "")

A map returns an `Output`, None (drop), a list of `Output`s, or an outcome (`KEEP`, `DROP`,
`emit(...)`, `fail(reason)`, `retry(reason)`); an exception sends the record to the
dead-letter topic with the exception as its reason::

    @map
    def upper(r):
        return r.to_output().with_value(r.value_str().upper())

Config and state: subclass `Plugin`. `self.state` is plain Python data (dicts, lists,
numbers, strings, bytes, sets, tuples): the SDK snapshots it (pickle) at the host's
checkpoints and restores it after a restart or a hot reload, so a new version reads what the
old one left::

    from sluice_plugin import *

    @plugin
    class Count(Plugin):
        def init(self, config):          # the manifest's [config] table, as a dict
            self.every = config.get("every", 100)
            self.state = {"seen": 0}
        def process(self, r):
            self.state["seen"] += 1
            if self.state["seen"] % self.every == 0:
                return emit(Output(str(self.state["seen"])).to_topic("milestones"))
            return KEEP

Two rules keep output exactly-once (the Rust SDK's documentation explains why):
`process` and `on_watermark` must depend only on `self.state` and their arguments (the
plugin's clock stands still and its randomness is seeded, so a replay sees the same world);
`tick` may change state `process` reads only in a call that returns output.

`log.info(...)` (and `debug`, `warn`, `error`) writes to the broker's log; `task()` says which
pipeline and partition the instance runs for. A plugin without `tick` is ticked once, then
only after input; one with a `tick` calls `pause_ticks()` when it has nothing to wait for (no
window open), so its idle partitions cost no CPU.
"""

import json as _json
import pickle as _pickle

import wit_world as _wit_world
from componentize_py_types import Err as _Err
from wit_world.imports import host as _host
from wit_world.imports import types as _t

# `filter` and `map` are left out of `*`, so a star import does not hide Python's own.
__all__ = ["Record", "Output", "Plugin", "plugin", "emit", "fail", "retry", "KEEP", "DROP",
           "log", "task", "pause_ticks"]


class Record:
    """One input record: topic, partition, offset, timestamp (ms), key, value (bytes or
    None) and headers (a list of (name, bytes) pairs)."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")

    def __init__(self, value=None, key=None, headers=None, topic="", partition=0, offset=0,
                 timestamp=0):
        self.value = _as_bytes(value)
        self.key = _as_bytes(key)
        self.headers = [(n, _as_bytes(v)) for n, v in (headers or [])]
        self.topic, self.partition, self.offset, self.timestamp = topic, partition, offset, timestamp

    def value_str(self):
        """The value as UTF-8 text, or None (no value, or not UTF-8)."""
        return _text(self.value)

    def key_str(self):
        return _text(self.key)

    def header(self, name):
        """The first header called `name`, as bytes, or None."""
        return next((v for n, v in self.headers if n == name), None)

    def header_str(self, name):
        return _text(self.header(name))

    def json(self):
        """The value parsed as JSON (raises ValueError if it is not)."""
        if self.value is None:
            raise ValueError("record has no value")
        return _json.loads(self.value)

    def to_output(self):
        """An output with this record's key, value, headers and timestamp."""
        return Output(self.value, key=self.key, headers=list(self.headers), timestamp=self.timestamp)

    def __repr__(self):
        return f"Record({self.topic}-{self.partition}@{self.offset}, key={self.key!r}, value={self.value!r})"


class Output:
    """A record to emit. Without `to_topic` it goes to the pipeline's output topic; a keyed
    one is partitioned by murmur2 like Kafka's default partitioner."""

    __slots__ = ("topic", "key", "value", "headers", "timestamp")

    def __init__(self, value=None, key=None, headers=None, topic=None, timestamp=None):
        self.value = _as_bytes(value)
        self.key = _as_bytes(key)
        self.headers = [(n, _as_bytes(v)) for n, v in (headers or [])]
        self.topic, self.timestamp = topic, timestamp

    def with_value(self, value):
        self.value = _as_bytes(value)
        return self

    def with_key(self, key):
        self.key = _as_bytes(key)
        return self

    def to_topic(self, topic):
        self.topic = topic
        return self

    def header(self, name, value):
        self.headers.append((name, _as_bytes(value)))
        return self

    def with_timestamp(self, ms):
        self.timestamp = ms
        return self

    def _wit(self):
        return _t.OutputRecord(self.topic, self.key, self.value,
                               [(n, v if v is not None else b"") for n, v in self.headers],
                               self.timestamp)


# Outcomes. KEEP forwards the record unchanged, DROP forwards nothing.
KEEP = _t.Outcome_Keep()
DROP = _t.Outcome_Drop()


def emit(*outputs):
    """Emit these records in the input record's place (none, one or many)."""
    if len(outputs) == 1 and isinstance(outputs[0], (list, tuple)):
        outputs = outputs[0]
    return _t.Outcome_Replace([o._wit() for o in outputs])


def fail(reason):
    """Send the record to the dead-letter topic with this reason."""
    return _t.Outcome_Fail(str(reason))


def retry(reason):
    """Try the record again later (the pipeline's backoff); after its last attempt it goes
    to the dead-letter topic with this reason."""
    return _t.Outcome_Retry(str(reason))


class Plugin:
    """Base of stateful plugins. Override `init(config)` (raise to refuse the config),
    `process(record)`, and optionally `tick(now_ms)` and `on_watermark(watermark_ms)`, which
    return lists of `Output`s. Keep what must survive restarts in `self.state`."""

    state = None

    def init(self, config):
        pass

    def process(self, record):
        return KEEP

    def tick(self, now_ms):
        # Nothing time-based here: not ticked again until the next record.
        pause_ticks()
        return []

    def on_watermark(self, watermark_ms):
        return []


class _Log:
    """The broker's log, at the plugin's name."""

    def _at(self, level, *parts):
        _host.log(level, " ".join(str(p) for p in parts))

    def trace(self, *parts): self._at(_t.Level.TRACE, *parts)
    def debug(self, *parts): self._at(_t.Level.DEBUG, *parts)
    def info(self, *parts): self._at(_t.Level.INFO, *parts)
    def warn(self, *parts): self._at(_t.Level.WARN, *parts)
    def error(self, *parts): self._at(_t.Level.ERROR, *parts)


log = _Log()


def task():
    """Where this instance runs: .pipeline, .topic, .partition, .retry."""
    return _host.task()


def pause_ticks():
    """`tick` has nothing to do until more input (no window open): the host stops ticking
    this instance until its next record. The default `tick` calls it."""
    _host.pause_ticks()


# The plugin class the component exports; set by @filter, @map or @plugin.
_factory = None
_instance = None


def plugin(cls):
    """Registers a `Plugin` subclass as the component's plugin."""
    global _factory
    if _factory is not None:
        raise RuntimeError("one plugin per component: @filter, @map or @plugin is used twice")
    _factory = cls
    return cls


def filter(fn):
    """Registers fn(record) -> bool: keep the records it returns true for."""
    class _Filter(Plugin):
        def process(self, record):
            return KEEP if fn(record) else DROP
    plugin(_Filter)
    return fn


def map(fn):
    """Registers fn(record) -> Output | None | [Output] | outcome."""
    class _Map(Plugin):
        def process(self, record):
            return fn(record)
    plugin(_Map)
    return fn


def _as_bytes(v):
    if v is None or isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"expected bytes or str, got {type(v).__name__}")


def _text(b):
    if b is None:
        return None
    try:
        return b.decode()
    except UnicodeDecodeError:
        return None


def _outcome(result):
    """What process returned, as the host's outcome."""
    if isinstance(result, (_t.Outcome_Keep, _t.Outcome_Drop, _t.Outcome_Replace,
                           _t.Outcome_Fail, _t.Outcome_Retry)):
        return result
    if result is None:
        return DROP
    if result is True:
        return KEEP
    if result is False:
        return DROP
    if isinstance(result, Output):
        return _t.Outcome_Replace([result._wit()])
    if isinstance(result, (list, tuple)):
        return emit(list(result))
    return fail(f"process returned {type(result).__name__}, not an outcome or Output")


def _outputs(result):
    return [o._wit() for o in (result or [])]


def _reason(e):
    return f"{type(e).__name__}: {e}"


class WitWorld(_wit_world.WitWorld):
    """The component's exports, calling the registered plugin."""

    def init(self, config):
        global _instance
        if _factory is None:
            raise _Err("no plugin registered: decorate a function with @filter or @map, or a Plugin class with @plugin")
        try:
            _instance = _factory()
            _instance.init(_json.loads(config))
        except Exception as e:
            raise _Err(_reason(e))

    def process(self, batch):
        out = []
        for w in batch.records:
            r = Record(w.value, w.key, w.headers, batch.topic, batch.partition, w.offset, w.timestamp)
            try:
                out.append(_outcome(_instance.process(r)))
            except Exception as e:
                out.append(fail(_reason(e)))
        return out

    def tick(self, now_ms):
        return _outputs(_instance.tick(now_ms))

    def on_watermark(self, watermark_ms):
        return _outputs(_instance.on_watermark(watermark_ms))

    def snapshot(self):
        if _instance.state is None:
            return b""
        return _pickle.dumps(_instance.state, protocol=5)

    def restore(self, state):
        if not state:
            return
        try:
            _instance.state = _pickle.loads(state)
        except Exception as e:
            raise _Err("cannot restore the state: " + _reason(e))


# Built as the component's entry (`componentize-py ... componentize sluice_plugin`, which is
# what `sluice plugin build` runs): the user's module registers its plugin when imported.
try:
    import app  # noqa: F401
except ModuleNotFoundError as _e:
    if _e.name != "app":
        raise
