// Test plugin: every part of the JavaScript SDK the end-to-end test checks (the same as
// plugins/testing/py-features, in JavaScript).
import { Output, emit, fail, log, pauseTicks, plugin, retry, task } from "sluice-plugin";

export default plugin({
  init(config) {
    this.routeTo = config.route_to;
    const t = task();
    this.where = `${t.pipeline}/${t.topic}/${t.partition}/${t.retry ? "True" : "False"}`;
    this.state = { ticked: false };
    log.info("features plugin at", this.where);
  },
  process(r) {
    const v = r.valueStr();
    if (v === "retry") return retry("not yet");
    if (v === "fail") return fail("failed on purpose");
    if (v === "raise") throw new Error("raised on purpose");
    if (v === "route") return emit(r.toOutput().toTopic(this.routeTo));
    return r.toOutput().header("where", this.where);
  },
  tick(nowMs) {
    if (this.state.ticked || task().retry) {
      pauseTicks();
      return [];
    }
    this.state.ticked = true;
    return [new Output("tick").toTopic("ticks")];
  },
});
