// The benchmarks' trivial filter in JavaScript: like the Rust `poison` test plugin, one
// compare per record, keeps everything that does not start with "poison".
import { filter } from "sluice-plugin";

const POISON = [112, 111, 105, 115, 111, 110]; // "poison"

export default filter(r => {
  const v = r.value;
  if (!v || v.length < POISON.length) return true;
  return !POISON.every((b, i) => v[i] === b);
});
