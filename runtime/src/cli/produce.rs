//! `sluice produce TOPIC`: one record per stdin line, partitioned as Kafka's default
//! partitioner does (murmur2 of the key; key-less records spread evenly, a batch at a time).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{kafka_error, Conn};
use crate::client::{partition_for_key, Client};
use crate::records::{encode_batch, parse_compression, Record};

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    pub topic: String,
    /// Split each line at the first SEP into key and value
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// none, gzip, snappy, lz4 or zstd
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// 0 (no reply), 1 or -1/all
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// A header on every record, NAME=VALUE (repeatable; as kcat's -H)
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition instead of partitioning by key
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    #[command(flatten)]
    pub conn: Conn,
}

/// Records per batch before it is sent.
const BATCH_RECORDS: usize = 1000;
const BATCH_BYTES: usize = 512 * 1024;

/// Records waiting to be sent, by partition.
#[derive(Default)]
pub(crate) struct Pending {
    records: BTreeMap<i32, Vec<Record>>,
    bytes: usize,
    pub(crate) count: usize,
}

impl Pending {
    pub(crate) fn push(&mut self, partition: i32, r: Record) {
        self.bytes +=
            r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len());
        self.count += 1;
        self.records.entry(partition).or_default().push(r);
    }

    pub(crate) fn full(&self) -> bool {
        self.count >= BATCH_RECORDS || self.bytes >= BATCH_BYTES
    }
}

/// Sends `p` as one produce request and checks every partition's answer.
pub(crate) async fn flush(
    c: &mut Client,
    topic: &str,
    p: &mut Pending,
    codec: kafka_protocol::records::Compression,
    acks: i16,
    version: i16,
) -> Result<()> {
    if p.count == 0 {
        return Ok(());
    }
    let mut parts = Vec::new();
    for (partition, recs) in std::mem::take(&mut p.records) {
        let batch = encode_batch(&recs, codec)?;
        parts.push(
            PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch)),
        );
    }
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(parts)]);
    p.bytes = 0;
    p.count = 0;
    if acks == 0 {
        // No response comes back for acks=0: send and go on.
        c.send_only(&req, version).await?;
        return Ok(());
    }
    let resp = c.call(&req, version).await?;
    for t in resp.responses {
        for pr in t.partition_responses {
            if pr.error_code != 0 {
                bail!(
                    "produce to {topic}/{} failed: {}",
                    pr.index,
                    kafka_error(pr.error_code, pr.error_message.as_deref())
                );
            }
        }
    }
    Ok(())
}

pub async fn run(a: ProduceArgs) -> Result<()> {
    let codec = parse_compression(&a.compression)
        .with_context(|| format!("unknown compression '{}'", a.compression))?;
    let acks: i16 = match a.acks.as_str() {
        "all" | "-1" => -1,
        "1" => 1,
        "0" => 0,
        other => bail!("--acks must be 0, 1 or all, not '{other}'"),
    };
    let mut c = a.conn.connect().await?;
    // Ask with auto-creation on, as Kafka producers do.
    let v = c
        .version(ApiKey::Metadata, 12)
        .context("broker does not support Metadata")?;
    let request = kafka_protocol::messages::MetadataRequest::default()
        .with_topics(Some(vec![
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(a.topic.clone())))),
        ]))
        .with_allow_auto_topic_creation(true);
    // A topic this request creates is LEADER_NOT_AVAILABLE (5) until asked again, as in Kafka.
    let mut md = c.call(&request, v).await?;
    for _ in 0..50 {
        if md.topics.first().is_none_or(|t| t.error_code != 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        md = c.call(&request, v).await?;
    }
    let t = md.topics.first().context("empty metadata response")?;
    if t.error_code != 0 {
        bail!("topic '{}': {}", a.topic, kafka_error(t.error_code, None));
    }
    let partitions = t.partitions.len() as i32;
    if partitions == 0 {
        bail!("topic '{}' has no partitions", a.topic);
    }
    let version = c
        .version(ApiKey::Produce, 9)
        .filter(|v| *v >= 3)
        .context("broker does not support Produce v3+")?;
    if let Some(p) = a.partition {
        if !(0..partitions).contains(&p) {
            bail!(
                "topic '{}' has no partition {p} (it has {partitions})",
                a.topic
            );
        }
    }
    let headers: Vec<(Bytes, Option<Bytes>)> = a
        .headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) => Ok((Bytes::from(k.to_string()), Some(Bytes::from(v.to_string())))),
            None => bail!("header '{h}': expected NAME=VALUE"),
        })
        .collect::<Result<_>>()?;
    let mut pending = Pending::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut sticky = 0i32;
    let mut in_sticky = 0usize;
    let mut total = 0u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    while let Some(line) = lines.next_line().await.context("cannot read stdin")? {
        let (key, value): (Option<Bytes>, String) = match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(Bytes::from(k.to_string())), v.to_string()),
                None => (None, line),
            },
            None => (None, line),
        };
        let partition = match (&key, a.partition) {
            (_, Some(p)) => p,
            (Some(k), None) => partition_for_key(k.as_ref(), partitions),
            (None, None) => {
                // Sticky spreading: a batch's worth to one partition, then the next.
                if in_sticky >= BATCH_RECORDS {
                    sticky = (sticky + 1) % partitions;
                    in_sticky = 0;
                }
                in_sticky += 1;
                sticky
            }
        };
        pending.push(
            partition,
            Record {
                offset: 0,
                timestamp: crate::broker::now_ms(),
                key,
                value: Some(Bytes::from(value)),
                headers: headers.clone(),
            },
        );
        total += 1;
        if pending.full() {
            flush(&mut c, &a.topic, &mut pending, codec, acks, version).await?;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("... {total} records produced");
            last_report = Instant::now();
        }
    }
    flush(&mut c, &a.topic, &mut pending, codec, acks, version).await?;
    eprintln!(
        "produced {total} records to {} in {:.1}s",
        a.topic,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
