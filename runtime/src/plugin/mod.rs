//! The plugin host: pipelines of WebAssembly components that consume topics and produce to
//! others, deployed by dropping files into a directory.

pub mod checkpoint;
pub mod engine;
pub mod manifest;
pub mod output;
