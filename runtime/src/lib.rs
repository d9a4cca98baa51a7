//! sluice: a Kafka-compatible streaming broker.
//!
//! Code map: [`log`] stores partitions as segment files; [`broker`] owns topics and their
//! configs; [`group`] coordinates consumer groups and keeps committed offsets; [`txn`] is the
//! transaction coordinator; [`protocol`] answers Kafka requests; [`server`] moves bytes between sockets and
//! [`protocol`]; [`auth`] says who a connection is (TLS, SASL, credentials); [`client`] is the small Kafka client behind the CLI; [`metrics`] exports
//! Prometheus text; [`records`] decodes and encodes individual records.

pub mod alloc;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod console;
pub mod disk;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod limits;
pub mod log;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod protocol;
pub mod records;
pub mod server;
pub mod txn;
pub mod worker;

// Unit tests run under the broker's allocator too, so the hostile-input tests mean something.
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: alloc::LazyHugeAlloc = alloc::LazyHugeAlloc;
