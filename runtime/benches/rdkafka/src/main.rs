//! Placeholder: this crate exists only so that `cargo fetch` downloads rdkafka-sys
//! (librdkafka's C sources) for runtime/benches/kafka_bench.sh. It is never built.
fn main() {}
