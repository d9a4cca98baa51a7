//! `sluice consume TOPIC`: print records from every partition, one per line.

use std::io::Write;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::topic::{metadata, watermarks};
use super::{kafka_error, Conn};
use crate::client::Client;
use crate::records::decode_batches;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start at the oldest record instead of new ones only
    #[arg(long)]
    pub from_beginning: bool,
    /// Print KEY<TAB>VALUE
    #[arg(long)]
    pub print_key: bool,
    /// Stop after N records
    #[arg(long, short = 'n')]
    pub max: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn run(a: ConsumeArgs) -> Result<()> {
    let mut c = a.conn.connect().await?;
    let md = metadata(&mut c, Some(std::slice::from_ref(&a.topic))).await?;
    let t = md.topics.first().context("empty metadata response")?;
    if t.error_code != 0 {
        bail!("topic '{}': {}", a.topic, kafka_error(t.error_code, None));
    }
    let mut parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    parts.sort();
    let wms = watermarks(&mut c, &a.topic, &parts).await?;
    let mut next: Vec<i64> = wms
        .iter()
        .map(|&(lo, hi)| if a.from_beginning { lo } else { hi })
        .collect();
    let version = c
        .version(ApiKey::Fetch, 12)
        .context("broker does not support Fetch")?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        let batch = fetch(&mut c, &a.topic, &parts, &mut next, version).await?;
        let mut out = stdout.lock();
        for r in batch {
            if a.print_key {
                let k = r.key.as_deref().unwrap_or_default();
                out.write_all(k)?;
                out.write_all(b"\t")?;
            }
            out.write_all(r.value.as_deref().unwrap_or_default())?;
            out.write_all(b"\n")?;
            printed += 1;
            if a.max.is_some_and(|m| printed >= m) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}

/// One fetch of `parts` of `topic` from the offsets in `next` (advanced past what is
/// returned); waits up to half a second for data.
pub(crate) async fn fetch(
    c: &mut Client,
    topic: &str,
    parts: &[i32],
    next: &mut [i64],
    version: i16,
) -> Result<Vec<crate::records::Record>> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(16 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                parts
                    .iter()
                    .zip(next.iter())
                    .map(|(&p, &o)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(o)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    let resp = c.call(&req, version).await?;
    if resp.error_code != 0 {
        bail!("fetch failed: {}", kafka_error(resp.error_code, None));
    }
    let mut out = Vec::new();
    for tr in resp.responses {
        for pd in tr.partitions {
            let Some(i) = parts.iter().position(|&p| p == pd.partition_index) else {
                continue;
            };
            if pd.error_code != 0 {
                bail!(
                    "fetch of partition {} failed: {}",
                    pd.partition_index,
                    kafka_error(pd.error_code, None)
                );
            }
            let Some(data) = pd.records else { continue };
            for r in decode_batches(data)? {
                if r.offset < next[i] {
                    continue;
                }
                next[i] = r.offset + 1;
                out.push(r);
            }
        }
    }
    Ok(out)
}
