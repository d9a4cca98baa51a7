//! Cluster-wide deployment: `sluice plugin deploy NAME.toml --workers GROUP` writes the
//! manifest and its component as one record (key: the pipeline's name) to the compacted topic
//! `GROUP.deployments`; every worker of the group follows that topic and keeps its records as
//! files in a directory of its own, which it reconciles like its plugins directory (same
//! checks, same hot reload). A tombstone undeploys. Compaction keeps each pipeline's latest
//! version, so a worker that starts later finds every deployment.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::plugin::checkpoint::Bin;

/// Largest deployment record (manifest and component).
pub const MAX_DEPLOYMENT: usize = 64 << 20;

pub fn topic(group: &str) -> String {
    format!("{group}.deployments")
}

#[derive(Serialize, Deserialize)]
struct Deployment {
    manifest: String,
    component: Bin,
}

/// A pipeline name that is safe as a file name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Publishes the pipeline of manifest `path` (with the component it names) to `group`'s
/// workers, or with `undeploy`, takes it away. Returns the record's offset.
pub fn publish(
    client: &ClientConfig,
    rt: &tokio::runtime::Handle,
    group: &str,
    path: &Path,
    undeploy: bool,
) -> Result<(String, i64), String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a NAME.toml path", path.display()))?
        .to_string();
    if !valid_name(&name) {
        return Err(format!("'{name}' is not a valid pipeline name"));
    }
    let value = if undeploy {
        None
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let m = crate::plugin::manifest::Manifest::parse(path, &text).map_err(|e| e.to_string())?;
        let component =
            std::fs::read(&m.wasm).map_err(|e| format!("cannot read {}: {e}", m.wasm.display()))?;
        let v = rmp_serde::to_vec_named(&Deployment {
            manifest: text,
            component: Bin(component),
        })
        .map_err(|e| e.to_string())?;
        if v.len() > MAX_DEPLOYMENT {
            return Err(format!(
                "{name}: {} bytes with its component, at most {MAX_DEPLOYMENT}",
                v.len()
            ));
        }
        Some(v)
    };
    let t = topic(group);
    super::io::create_topics(client, rt, &[], &[(t.as_str(), 1)])?;
    let p: BaseProducer<_> = client
        .clone()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.max.bytes", (MAX_DEPLOYMENT + 4096).to_string())
        .create_with_context(Delivered::default())
        .map_err(|e| e.to_string())?;
    let mut rec: BaseRecord<'_, str, [u8], ()> = BaseRecord::to(&t).key(name.as_str());
    if let Some(v) = value.as_deref() {
        rec = rec.payload(v);
    }
    p.send(rec).map_err(|(e, _)| e.to_string())?;
    p.flush(Duration::from_secs(30))
        .map_err(|e| format!("deployment not acknowledged: {e}"))?;
    let got = p
        .context()
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match got {
        Some(Ok(offset)) => Ok((t, offset)),
        Some(Err(e)) => Err(format!("deployment refused: {e}")),
        None => Err("deployment not acknowledged".into()),
    }
}

#[derive(Default)]
struct Delivered(std::sync::Mutex<Option<Result<i64, String>>>);

impl rdkafka::ClientContext for Delivered {}

impl rdkafka::producer::ProducerContext for Delivered {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        let v = match r {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
}

/// Writes `bytes` to `path` by way of a temporary file, so a reader never sees half of it.
fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Keeps `dir` equal to the deployments of `group` until `stop`: NAME.wasm, then NAME.toml
/// (its `wasm` key dropped, so it names NAME.wasm).
pub fn follow(client: ClientConfig, group: String, dir: PathBuf, stop: &AtomicBool) {
    let t = topic(&group);
    let consumer: Result<BaseConsumer, _> = client
        .clone()
        .set("group.id", format!("{group}.deployments-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set(
            "fetch.message.max.bytes",
            (MAX_DEPLOYMENT + 4096).to_string(),
        )
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create();
    let consumer = match consumer {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the deployments topic");
            return;
        }
    };
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(&t, 0, Offset::Beginning) {
        tracing::error!(error = %e, "cannot follow the deployments topic");
        return;
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::error!(error = %e, "cannot follow the deployments topic");
        return;
    }
    while !stop.load(Ordering::Acquire) {
        let m = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => m,
            // Until the topic exists (the first `plugin deploy` makes it) every poll fails at
            // once: wait rather than spin.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "deployments topic");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            None => continue,
        };
        let Some(name) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        if !valid_name(name) {
            tracing::warn!(%name, "deployment with an unusable name ignored");
            continue;
        }
        let (toml, wasm) = (
            dir.join(format!("{name}.toml")),
            dir.join(format!("{name}.wasm")),
        );
        let Some(v) = m.payload() else {
            let _ = std::fs::remove_file(&toml);
            let _ = std::fs::remove_file(&wasm);
            tracing::info!(pipeline = %name, offset = m.offset(), "undeployed through the deployments topic");
            continue;
        };
        let d: Deployment = match rmp_serde::from_slice(v) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(pipeline = %name, error = %e, "unreadable deployment ignored");
                continue;
            }
        };
        let manifest = match d.manifest.parse::<toml::Table>() {
            Ok(mut t) => {
                t.remove("wasm");
                toml::to_string(&t).unwrap_or(d.manifest)
            }
            Err(_) => d.manifest,
        };
        let written =
            replace(&wasm, &d.component.0).and_then(|()| replace(&toml, manifest.as_bytes()));
        match written {
            Ok(()) => {
                tracing::info!(pipeline = %name, offset = m.offset(), "deployment received")
            }
            Err(e) => tracing::error!(pipeline = %name, error = %e, "cannot keep a deployment"),
        }
    }
}
