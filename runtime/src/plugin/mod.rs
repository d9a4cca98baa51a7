//! The plugin host: pipelines of WebAssembly components that consume topics and produce to
//! others, deployed by dropping files into a directory.

pub mod build;

/// The host pipelines act from under ACLs: they run inside the broker.
pub const PIPELINE_HOST: &str = "127.0.0.1";

pub mod checkpoint;
pub mod deployments;
pub mod engine;
pub mod host;
pub mod io;
pub mod langs;
pub mod manifest;
pub mod output;
pub mod pipeline;
pub mod pool;
pub mod reset;
pub mod task;
pub mod watermark;

pub use host::PluginHost;
pub use reset::ResetTo;
