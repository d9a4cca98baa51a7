//! `sluice group ...`: consumer groups, their lag, and offset resets, like
//! `kafka-consumer-groups`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::topic::{metadata, offsets_at};
use super::{kafka_error, print_json, Conn, Output};
use crate::client::Client;

#[derive(clap::Subcommand, Debug)]
pub enum GroupCmd {
    /// List consumer groups and their states
    List {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a group's members, committed offsets and lag per partition
    Describe {
        name: String,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Move a group's committed offsets (the group must have no active members)
    Reset {
        name: String,
        /// Topic whose offsets to reset
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        to: ResetTo,
        /// Show each partition's current and new offset and change nothing (kafka-consumer-groups'
        /// --dry-run)
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an empty group and its committed offsets
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// To each partition's first offset
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's end
    #[arg(long)]
    to_latest: bool,
    /// To this offset (clamped to what each partition holds)
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To the first record at or after this time (ms since the epoch)
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

async fn describe_group(c: &mut Client, name: &str) -> Result<DescribeGroupsResponse> {
    let v = c
        .version(ApiKey::DescribeGroups, 5)
        .context("broker does not support DescribeGroups")?;
    Ok(c.call(
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(name))]),
        v,
    )
    .await?)
}

pub(crate) fn assigned(mut a: Bytes) -> Vec<(String, i32)> {
    if a.len() < 2 {
        return Vec::new();
    }
    let version = a.get_i16();
    match ConsumerProtocolAssignment::decode(&mut a, version) {
        Ok(x) => x
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let t = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (t.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// One row of a group's description: topic, partition, committed offset (or -1), log end
/// offset (or -1), and the member that has the partition.
pub(crate) type Row = (String, i32, i64, i64, Option<String>);

/// A group's state, member count and, per partition it has offsets for or is assigned, a
/// [`Row`].
pub(crate) async fn describe_table(
    c: &mut Client,
    name: &str,
) -> Result<(String, usize, Vec<Row>)> {
    let d = describe_group(c, name).await?;
    let g = d.groups.first().context("empty DescribeGroups response")?;
    if g.error_code != 0 {
        bail!(
            "group '{name}': {}",
            kafka_error(g.error_code, g.error_message.as_deref())
        );
    }
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for m in &g.members {
        for tp in assigned(m.member_assignment.clone()) {
            owner.insert(
                tp,
                format!("{} ({})", m.member_id.as_str(), m.client_host.as_str()),
            );
        }
    }
    let v = c
        .version(ApiKey::OffsetFetch, 7)
        .context("broker does not support OffsetFetch")?;
    let committed = c
        .call(
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(sb(name)))
                .with_topics(None),
            v,
        )
        .await?;
    let mut rows: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in committed.topics {
        for p in t.partitions {
            rows.insert(
                (t.name.0.to_string(), p.partition_index),
                p.committed_offset,
            );
        }
    }
    for tp in owner.keys() {
        rows.entry(tp.clone()).or_insert(-1);
    }
    let topics: std::collections::BTreeSet<String> = rows.keys().map(|(t, _)| t.clone()).collect();
    // (topic, partition, committed or -1, log end or -1, member)
    let mut table = Vec::new();
    for t in topics {
        let parts: Vec<i32> = rows
            .keys()
            .filter(|(tt, _)| *tt == t)
            .map(|(_, p)| *p)
            .collect();
        let ends = offsets_at(c, &t, &parts, -1).await.unwrap_or_default();
        for p in parts {
            let committed = rows[&(t.clone(), p)];
            let end = ends.get(&p).copied().unwrap_or(-1);
            let who = owner.get(&(t.clone(), p)).cloned();
            table.push((t.clone(), p, committed, end, who));
        }
    }
    Ok((g.group_state.to_string(), g.members.len(), table))
}

pub async fn run(cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::List { out, conn } => {
            let mut c = conn.connect().await?;
            let v = c
                .version(ApiKey::ListGroups, 4)
                .context("broker does not support ListGroups")?;
            let resp = c.call(&ListGroupsRequest::default(), v).await?;
            if resp.error_code != 0 {
                bail!("cannot list groups: {}", kafka_error(resp.error_code, None));
            }
            if out.json() {
                print_json(&serde_json::Value::Array(
                    resp.groups
                        .iter()
                        .map(|g| {
                            serde_json::json!({
                                "group": g.group_id.0.as_str(),
                                "state": g.group_state.as_str(),
                                "protocol_type": g.protocol_type.as_str(),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            println!("{:<40} {:<22} PROTOCOL-TYPE", "GROUP", "STATE");
            for g in resp.groups {
                println!(
                    "{:<40} {:<22} {}",
                    g.group_id.0.as_str(),
                    g.group_state.as_str(),
                    g.protocol_type.as_str()
                );
            }
        }
        GroupCmd::Describe { name, out, conn } => {
            let mut c = conn.connect().await?;
            let (state, members, table) = describe_table(&mut c, &name).await?;
            let lag =
                |committed: i64, end: i64| (committed >= 0 && end >= 0).then(|| end - committed);
            if out.json() {
                print_json(&serde_json::json!({
                    "group": name,
                    "state": state,
                    "members": members,
                    "partitions": table.iter().map(|(t, p, committed, end, who)| serde_json::json!({
                        "topic": t,
                        "partition": p,
                        "committed_offset": (*committed >= 0).then_some(*committed),
                        "log_end_offset": (*end >= 0).then_some(*end),
                        "lag": lag(*committed, *end),
                        "member": who,
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!("GROUP {name}  STATE {state}  MEMBERS {members}");
            println!();
            println!(
                "{:<30} {:>9} {:>16} {:>16} {:>10}  MEMBER",
                "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
            );
            for (t, p, committed, end, who) in table {
                let shown_lag = lag(committed, end).map_or("-".into(), |l| l.to_string());
                let shown = if committed >= 0 {
                    committed.to_string()
                } else {
                    "-".into()
                };
                let who = who.as_deref().unwrap_or("-");
                println!("{t:<30} {p:>9} {shown:>16} {end:>16} {shown_lag:>10}  {who}");
            }
        }
        GroupCmd::Reset {
            name,
            topic,
            to,
            dry_run,
            conn,
        } => {
            let mut c = conn.connect().await?;
            let d = describe_group(&mut c, &name).await?;
            if let Some(g) = d.groups.first() {
                if !g.members.is_empty() {
                    bail!(
                        "group '{name}' has {} active member(s) ({}); stop its consumers before resetting offsets",
                        g.members.len(),
                        g.group_state.as_str()
                    );
                }
            }
            let md = metadata(&mut c, Some(std::slice::from_ref(&topic))).await?;
            let t = md.topics.first().context("empty metadata response")?;
            if t.error_code != 0 {
                bail!("topic '{topic}': {}", kafka_error(t.error_code, None));
            }
            let parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
            let earliest = offsets_at(&mut c, &topic, &parts, -2).await?;
            let latest = offsets_at(&mut c, &topic, &parts, -1).await?;
            let target: BTreeMap<i32, i64> = if to.to_earliest {
                earliest.clone()
            } else if to.to_latest {
                latest.clone()
            } else if let Some(o) = to.to_offset {
                parts
                    .iter()
                    .map(|&p| (p, o.clamp(earliest[&p], latest[&p])))
                    .collect()
            } else if let Some(ts) = to.to_timestamp {
                // No record that late: the partition's end, as Kafka's tool does.
                offsets_at(&mut c, &topic, &parts, ts)
                    .await?
                    .into_iter()
                    .map(|(p, o)| (p, if o < 0 { latest[&p] } else { o }))
                    .collect()
            } else {
                bail!("say where to: --to-earliest, --to-latest, --to-offset or --to-timestamp");
            };
            let v = c
                .version(ApiKey::OffsetFetch, 7)
                .context("broker does not support OffsetFetch")?;
            let now: BTreeMap<i32, i64> = c
                .call(
                    &OffsetFetchRequest::default()
                        .with_group_id(GroupId(sb(&name)))
                        .with_topics(None),
                    v,
                )
                .await?
                .topics
                .into_iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions)
                .map(|p| (p.partition_index, p.committed_offset))
                .collect();
            let show = |o: Option<&i64>| match o {
                Some(&o) if o >= 0 => o.to_string(),
                _ => "-".to_string(),
            };
            if dry_run {
                println!(
                    "{:<30} {:>9} {:>16} {:>16}  (dry run: nothing changed)",
                    "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"
                );
                for (p, o) in &target {
                    println!("{topic:<30} {p:>9} {:>16} {o:>16}", show(now.get(p)));
                }
                return Ok(());
            }
            let v = c
                .version(ApiKey::OffsetCommit, 7)
                .context("broker does not support OffsetCommit")?;
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(sb(&name)))
                .with_generation_id_or_member_epoch(-1)
                .with_member_id(sb(""))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_partitions(
                        target
                            .iter()
                            .map(|(&p, &o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                            })
                            .collect(),
                    )]);
            let resp = c.call(&req, v).await?;
            for t in resp.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        bail!(
                            "reset of {topic}/{} failed: {}",
                            p.partition_index,
                            kafka_error(p.error_code, None)
                        );
                    }
                }
            }
            println!(
                "{:<30} {:>9} {:>16} {:>16}",
                "TOPIC", "PARTITION", "PREVIOUS-OFFSET", "NEW-OFFSET"
            );
            for (p, o) in target {
                println!("{topic:<30} {p:>9} {:>16} {o:>16}", show(now.get(&p)));
            }
        }
        GroupCmd::Delete { name, conn } => {
            let mut c = conn.connect().await?;
            let v = c
                .version(ApiKey::DeleteGroups, 2)
                .context("broker does not support DeleteGroups")?;
            let resp = c
                .call(
                    &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(&name))]),
                    v,
                )
                .await?;
            for r in resp.results {
                if r.error_code != 0 {
                    bail!(
                        "cannot delete group '{name}': {}",
                        kafka_error(r.error_code, None)
                    );
                }
            }
            println!("deleted group {name}");
        }
    }
    Ok(())
}
