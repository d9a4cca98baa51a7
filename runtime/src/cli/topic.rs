//! `sluice topic ...`: topic administration over the Kafka admin APIs.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, ListOffsetsRequest, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{kafka_error, print_json, Conn, Output};
use crate::client::Client;

#[derive(clap::Subcommand, Debug)]
pub enum TopicCmd {
    /// Create a topic
    Create {
        name: String,
        #[arg(long, short = 'p', default_value_t = -1)]
        partitions: i32,
        /// A topic config, e.g. retention.ms=3600000 (repeatable)
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List topics
    List {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a topic's partitions, watermarks and configs
    Describe {
        name: String,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change topic configs
    AlterConfig {
        name: String,
        /// KEY=VALUE to set (repeatable)
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to reset to its default (repeatable)
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Grow a topic to N partitions in all (partitions are never removed)
    AddPartitions {
        name: String,
        /// The new total number of partitions
        #[arg(long)]
        total: i32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a topic and its data
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn split_kv(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("'{s}' is not KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.to_string()))
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(crate) async fn metadata(
    c: &mut Client,
    topics: Option<&[String]>,
) -> Result<MetadataResponse> {
    let v = c
        .version(ApiKey::Metadata, 12)
        .context("broker does not support Metadata")?;
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(sb(t)))))
                .collect()
        }))
        .with_allow_auto_topic_creation(false);
    Ok(c.call(&req, v).await?)
}

/// ListOffsets for every partition of `topic` at `ts` (-1 latest, -2 earliest, or a time).
pub(crate) async fn offsets_at(
    c: &mut Client,
    topic: &str,
    partitions: &[i32],
    ts: i64,
) -> Result<BTreeMap<i32, i64>> {
    let v = c
        .version(ApiKey::ListOffsets, 7)
        .context("broker does not support ListOffsets")?;
    let req = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(sb(topic)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(ts)
                    })
                    .collect(),
            )]);
    let resp = c.call(&req, v).await?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                bail!(
                    "offsets of {topic}/{}: {}",
                    p.partition_index,
                    kafka_error(p.error_code, None)
                );
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}

/// (log start, high watermark) of each of `partitions` of `topic`, in that order.
pub(crate) async fn watermarks(
    c: &mut Client,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i64, i64)>> {
    let lo = offsets_at(c, topic, partitions, -2).await?;
    let hi = offsets_at(c, topic, partitions, -1).await?;
    Ok(partitions
        .iter()
        .map(|p| {
            (
                lo.get(p).copied().unwrap_or(-1),
                hi.get(p).copied().unwrap_or(-1),
            )
        })
        .collect())
}

/// Creates a topic; returns its partition count.
pub(crate) async fn create(
    c: &mut Client,
    name: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> Result<i32> {
    let cfgs = configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(sb(k))
                .with_value(Some(sb(v)))
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(sb(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(cfgs)])
        .with_timeout_ms(30_000);
    let v = c
        .version(ApiKey::CreateTopics, 7)
        .context("broker does not support CreateTopics")?;
    let resp = c.call(&req, v).await?;
    let t = resp.topics.first().context("empty CreateTopics response")?;
    if t.error_code != 0 {
        bail!(
            "cannot create topic '{name}': {}",
            kafka_error(t.error_code, t.error_message.as_deref())
        );
    }
    Ok(t.num_partitions)
}

pub async fn run(cmd: TopicCmd) -> Result<()> {
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            configs,
            conn,
        } => {
            let mut c = conn.connect().await?;
            let mut kvs = Vec::new();
            for kv in &configs {
                kvs.push(split_kv(kv)?);
            }
            let n = create(&mut c, &name, partitions, &kvs).await?;
            println!("created topic {name} with {n} partitions");
        }
        TopicCmd::List { out, conn } => {
            let mut c = conn.connect().await?;
            let md = metadata(&mut c, None).await?;
            let mut rows: Vec<(String, usize)> = md
                .topics
                .iter()
                .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.partitions.len())))
                .collect();
            rows.sort();
            if out.json() {
                print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(n, p)| serde_json::json!({ "name": n, "partitions": p }))
                        .collect(),
                ));
                return Ok(());
            }
            println!("{:<40} PARTITIONS", "NAME");
            for (n, p) in rows {
                println!("{n:<40} {p}");
            }
        }
        TopicCmd::Describe { name, out, conn } => {
            let mut c = conn.connect().await?;
            let md = metadata(&mut c, Some(std::slice::from_ref(&name))).await?;
            let t = md.topics.first().context("empty metadata response")?;
            if t.error_code != 0 {
                bail!("topic '{name}': {}", kafka_error(t.error_code, None));
            }
            let mut parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            parts.sort();
            let wms = watermarks(&mut c, &name, &parts).await?;
            let leaders: Vec<i32> = parts
                .iter()
                .map(|p| {
                    t.partitions
                        .iter()
                        .find(|x| x.partition_index == *p)
                        .map(|x| x.leader_id.0)
                        .unwrap_or(-1)
                })
                .collect();
            let v = c
                .version(ApiKey::DescribeConfigs, 4)
                .context("broker does not support DescribeConfigs")?;
            let req = DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(sb(&name))
                    .with_configuration_keys(None),
            ]);
            let resp = c.call(&req, v).await?;
            let mut configs = Vec::new();
            for r in resp.results {
                if r.error_code != 0 {
                    bail!(
                        "configs of '{name}': {}",
                        kafka_error(r.error_code, r.error_message.as_deref())
                    );
                }
                for cfg in r.configs {
                    let source = match cfg.config_source {
                        1 => "topic",
                        5 => "default",
                        4 => "broker",
                        _ => "other",
                    };
                    configs.push((
                        cfg.name.to_string(),
                        cfg.value.as_deref().unwrap_or("").to_string(),
                        source,
                    ));
                }
            }
            if out.json() {
                print_json(&serde_json::json!({
                    "name": name,
                    "id": t.topic_id.to_string(),
                    "partitions": parts.iter().zip(&wms).zip(&leaders).map(|((p, (lo, hi)), l)| {
                        serde_json::json!({ "partition": p, "leader": l, "log_start_offset": lo, "high_watermark": hi })
                    }).collect::<Vec<_>>(),
                    "configs": configs.iter().map(|(k, v, src)| {
                        serde_json::json!({ "name": k, "value": v, "source": src })
                    }).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!("NAME        {name}");
            println!("ID          {}", t.topic_id);
            println!("PARTITIONS  {}", parts.len());
            println!();
            println!(
                "{:<10} {:<8} {:>16} {:>16}",
                "PARTITION", "LEADER", "LOG-START", "HIGH-WATERMARK"
            );
            for ((p, (lo, hi)), leader) in parts.iter().zip(wms).zip(leaders) {
                println!("{p:<10} {leader:<8} {lo:>16} {hi:>16}");
            }
            println!();
            println!("{:<36} {:<24} SOURCE", "CONFIG", "VALUE");
            for (k, v, source) in configs {
                println!("{k:<36} {v:<24} {source}");
            }
        }
        TopicCmd::AlterConfig {
            name,
            set,
            delete,
            conn,
        } => {
            if set.is_empty() && delete.is_empty() {
                bail!("nothing to change: pass --set KEY=VALUE or --delete KEY");
            }
            let mut c = conn.connect().await?;
            let mut ops = Vec::new();
            for kv in &set {
                let (k, v) = split_kv(kv)?;
                ops.push(
                    AlterableConfig::default()
                        .with_name(sb(&k))
                        .with_config_operation(0)
                        .with_value(Some(sb(&v))),
                );
            }
            for k in &delete {
                ops.push(
                    AlterableConfig::default()
                        .with_name(sb(k))
                        .with_config_operation(1),
                );
            }
            let v = c
                .version(ApiKey::IncrementalAlterConfigs, 1)
                .context("broker does not support IncrementalAlterConfigs")?;
            let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(sb(&name))
                    .with_configs(ops),
            ]);
            let resp = c.call(&req, v).await?;
            for r in resp.responses {
                if r.error_code != 0 {
                    bail!(
                        "cannot alter '{name}': {}",
                        kafka_error(r.error_code, r.error_message.as_deref())
                    );
                }
            }
            println!("altered configs of topic {name}");
        }
        TopicCmd::AddPartitions { name, total, conn } => {
            let mut c = conn.connect().await?;
            let v = c
                .version(ApiKey::CreatePartitions, 3)
                .context("broker does not support CreatePartitions")?;
            let req = kafka_protocol::messages::CreatePartitionsRequest::default()
                .with_topics(vec![
                    kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(TopicName(sb(&name)))
                        .with_count(total),
                ])
                .with_timeout_ms(30_000);
            let resp = c.call(&req, v).await?;
            for r in resp.results {
                if r.error_code != 0 {
                    bail!(
                        "cannot grow '{name}': {}",
                        kafka_error(r.error_code, r.error_message.as_deref())
                    );
                }
            }
            println!("topic {name} now has {total} partitions");
        }
        TopicCmd::Delete { name, conn } => {
            let mut c = conn.connect().await?;
            let v = c
                .version(ApiKey::DeleteTopics, 6)
                .context("broker does not support DeleteTopics")?;
            let mut req = DeleteTopicsRequest::default().with_timeout_ms(30_000);
            if v >= 6 {
                req.topics =
                    vec![DeleteTopicState::default().with_name(Some(TopicName(sb(&name))))];
            } else {
                req.topic_names = vec![TopicName(sb(&name))];
            }
            let resp = c.call(&req, v).await?;
            for r in resp.responses {
                if r.error_code != 0 {
                    bail!(
                        "cannot delete '{name}': {}",
                        kafka_error(r.error_code, r.error_message.as_deref())
                    );
                }
            }
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
