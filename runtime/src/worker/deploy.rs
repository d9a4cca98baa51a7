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

use crate::plugin::deployments::{apply, prune, record};
pub use crate::plugin::deployments::{topic, MAX_DEPLOYMENT};

/// Publishes the pipeline of manifest `path` (with the component it names) to `group`'s
/// workers, or with `undeploy`, takes it away. Returns the record's offset.
pub fn publish(
    client: &ClientConfig,
    rt: &tokio::runtime::Handle,
    group: &str,
    path: &Path,
    undeploy: bool,
) -> Result<(String, i64), String> {
    let (name, value) = record(path, undeploy)?;
    let t = topic(group);
    super::io::create_topics(client, rt, &[], &[(t.as_str(), 1, MAX_DEPLOYMENT + 4096)])?;
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

/// Keeps `dir` equal to the deployments of `group` until `stop` (see
/// [`crate::plugin::deployments::apply`]).
pub fn follow(
    client: ClientConfig,
    rt: tokio::runtime::Handle,
    group: String,
    dir: PathBuf,
    stop: &AtomicBool,
) {
    let t = topic(&group);
    // Made now rather than at the first deploy, so the reader below finds it (librdkafka logs
    // an error every few seconds for an assigned topic that does not exist). A worker without
    // the right to create it waits for `plugin deploy` to.
    if let Err(e) =
        super::io::create_topics(&client, &rt, &[], &[(t.as_str(), 1, MAX_DEPLOYMENT + 4096)])
    {
        tracing::debug!(error = %e, topic = %t, "deployments topic not created");
    }
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
    // What was undeployed while this worker was down is pruned from `dir` once the records
    // up to the high watermark seen at start are applied.
    let mut seen = std::collections::BTreeSet::new();
    let mut target: Option<i64> = None;
    let mut next = 0i64;
    while !stop.load(Ordering::Acquire) {
        if target.is_none() {
            target = consumer
                .fetch_watermarks(&t, 0, Duration::from_secs(5))
                .ok()
                .map(|(_, high)| high);
        }
        if let Some(high) = target.filter(|h| next >= *h) {
            prune(&dir, &seen);
            tracing::debug!(high, "deployments applied up to the start's high watermark");
            target = Some(i64::MAX);
        }
        let m = match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => m,
            // Until the topic exists every poll fails at once: wait rather than spin.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "deployments topic");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            None => continue,
        };
        apply(&dir, m.key(), m.payload(), m.offset());
        if let Some(k) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
            seen.insert(k.to_string());
        }
        next = m.offset() + 1;
    }
}
