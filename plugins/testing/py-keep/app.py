"""The benchmarks' trivial filter in Python: like the Rust `poison` test plugin, one string
compare per record, keeps everything that does not start with "poison"."""
from sluice_plugin import filter


@filter
def keep(r):
    return not (r.value or b"").startswith(b"poison")
