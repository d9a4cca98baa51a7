"""Test plugin: every part of the Python SDK the end-to-end test checks. By value:
"retry" is retried then dead-lettered, "fail" dead-lettered, "raise" raises (dead-lettered
with the exception), "route" goes to the topic `route_to` from the config; anything else is
tagged with where the task runs. The first tick emits one record to `ticks`; later ones pause the ticks."""
from sluice_plugin import *


@plugin
class Features(Plugin):
    def init(self, config):
        self.route_to = config["route_to"]
        t = task()
        self.where = f"{t.pipeline}/{t.topic}/{t.partition}/{t.retry}"
        self.state = {"ticked": False}
        log.info("features plugin at", self.where)

    def process(self, r):
        v = r.value_str()
        if v == "retry":
            return retry("not yet")
        if v == "fail":
            return fail("failed on purpose")
        if v == "raise":
            raise ValueError("raised on purpose")
        if v == "route":
            return emit(r.to_output().to_topic(self.route_to))
        return r.to_output().header("where", self.where)

    def tick(self, now_ms):
        if self.state["ticked"] or task().retry:
            pause_ticks()
            return []
        self.state["ticked"] = True
        return [Output("tick").to_topic("ticks")]
