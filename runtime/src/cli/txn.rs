//! `sluice txn ...`: transactions as the coordinator sees them, transactions left open in
//! partitions, and the abort of a hanging one, like `kafka-transactions.sh`.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
    ProducerId, TopicName, TransactionalId, WriteTxnMarkersRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::topic::metadata;
use super::{kafka_error, print_json, Conn, Output};
use crate::client::Client;

#[derive(clap::Subcommand, Debug)]
pub enum TxnCmd {
    /// List transactional ids: producer id, epoch, state, how long the open transaction has run
    List {
        /// Only transactions in this state (Empty, Ongoing, PrepareCommit, CompleteAbort, ...)
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one transactional id and the partitions of its open transaction
    Describe {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Transactions open in partitions that no coordinator transaction accounts for, or open
    /// for longer than the longest allowed timeout (15 min): they hold read_committed readers
    Hanging {
        /// Only this topic (default: every topic)
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Abort a hanging transaction in one partition (writes an abort marker for the producer)
    Abort {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        producer_id: i64,
        #[command(flatten)]
        conn: Conn,
    },
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// (state, producer id, epoch, start ms, timeout ms, partitions) of one transactional id.
type Described = (String, i64, i16, i64, i32, Vec<(String, i32)>);

async fn describe(c: &mut Client, ids: &[String]) -> Result<Vec<(String, Described)>> {
    let v = c
        .version(ApiKey::DescribeTransactions, 0)
        .context("broker does not support DescribeTransactions")?;
    let resp = c
        .call(
            &DescribeTransactionsRequest::default()
                .with_transactional_ids(ids.iter().map(|i| TransactionalId(sb(i))).collect()),
            v,
        )
        .await?;
    let mut out = Vec::new();
    for s in resp.transaction_states {
        if s.error_code != 0 {
            bail!(
                "transactional id '{}': {}",
                s.transactional_id.0.as_str(),
                kafka_error(s.error_code, None)
            );
        }
        let parts = s
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect();
        out.push((
            s.transactional_id.0.to_string(),
            (
                s.transaction_state.to_string(),
                s.producer_id.0,
                s.producer_epoch,
                s.transaction_start_time_ms,
                s.transaction_timeout_ms,
                parts,
            ),
        ));
    }
    Ok(out)
}

async fn list_ids(c: &mut Client, state: Option<&str>) -> Result<Vec<String>> {
    let v = c
        .version(ApiKey::ListTransactions, 1)
        .context("broker does not support ListTransactions")?;
    let req = ListTransactionsRequest::default()
        .with_state_filters(state.map(|s| vec![sb(s)]).unwrap_or_default())
        .with_duration_filter(-1);
    let resp = c.call(&req, v).await?;
    if resp.error_code != 0 {
        bail!(
            "cannot list transactions: {}",
            kafka_error(resp.error_code, None)
        );
    }
    Ok(resp
        .transaction_states
        .into_iter()
        .map(|t| t.transactional_id.0.to_string())
        .collect())
}

fn open_for(start_ms: i64) -> String {
    if start_ms < 0 {
        return "-".into();
    }
    format!("{}ms", crate::broker::now_ms() - start_ms)
}

pub async fn run(cmd: TxnCmd) -> Result<()> {
    match cmd {
        TxnCmd::List { state, out, conn } => {
            let mut c = conn.connect().await?;
            let ids = list_ids(&mut c, state.as_deref()).await?;
            if out.json() {
                let rows = describe(&mut c, &ids).await?;
                print_json(&serde_json::Value::Array(
                    rows.into_iter()
                        .map(|(id, (st, pid, epoch, start, timeout, parts))| {
                            serde_json::json!({
                                "transactional_id": id,
                                "producer_id": pid,
                                "epoch": epoch,
                                "state": st,
                                "start_ms": start,
                                "timeout_ms": timeout,
                                "partitions": parts.iter().map(|(t, p)| serde_json::json!({
                                    "topic": t,
                                    "partition": p,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            println!(
                "{:<40} {:>12} {:>6} {:<15} {:>10} {:>10} PARTITIONS",
                "TRANSACTIONAL-ID", "PRODUCER-ID", "EPOCH", "STATE", "OPEN-FOR", "TIMEOUT"
            );
            for (id, (st, pid, epoch, start, timeout, parts)) in describe(&mut c, &ids).await? {
                println!(
                    "{id:<40} {pid:>12} {epoch:>6} {st:<15} {:>10} {:>10} {}",
                    open_for(start),
                    format!("{timeout}ms"),
                    parts.len()
                );
            }
        }
        TxnCmd::Describe { id, conn } => {
            let mut c = conn.connect().await?;
            let d = describe(&mut c, std::slice::from_ref(&id)).await?;
            let (_, (st, pid, epoch, start, timeout, parts)) = d
                .into_iter()
                .next()
                .context("empty DescribeTransactions response")?;
            println!("transactional id  {id}");
            println!("producer id       {pid} (epoch {epoch})");
            println!("state             {st}");
            println!("open for          {}", open_for(start));
            println!("timeout           {timeout}ms");
            for (t, p) in parts {
                println!("partition         {t}-{p}");
            }
        }
        TxnCmd::Hanging { topic, conn } => {
            let mut c = conn.connect().await?;
            let md = metadata(&mut c, topic.as_ref().map(std::slice::from_ref)).await?;
            // What the coordinator accounts for: (producer id, topic, partition).
            let ids = list_ids(&mut c, Some("Ongoing")).await?;
            let mut known = BTreeSet::new();
            for (_, (_, pid, _, _, _, parts)) in describe(&mut c, &ids).await? {
                for (t, p) in parts {
                    known.insert((pid, t, p));
                }
            }
            let v = c
                .version(ApiKey::DescribeProducers, 0)
                .context("broker does not support DescribeProducers")?;
            let req = DescribeProducersRequest::default().with_topics(
                md.topics
                    .iter()
                    .filter_map(|t| {
                        Some(
                            TopicRequest::default()
                                .with_name(t.name.clone()?)
                                .with_partition_indexes(
                                    t.partitions.iter().map(|p| p.partition_index).collect(),
                                ),
                        )
                    })
                    .collect(),
            );
            let resp = c.call(&req, v).await?;
            println!(
                "{:<40} {:>9} {:>12} {:>6} {:>12} {:>10}",
                "TOPIC", "PARTITION", "PRODUCER-ID", "EPOCH", "START-OFFSET", "LAST-SEEN"
            );
            let now = crate::broker::now_ms();
            let mut n = 0;
            for t in resp.topics {
                for p in t.partitions {
                    for a in p.active_producers {
                        if a.current_txn_start_offset < 0 {
                            continue;
                        }
                        let accounted = known.contains(&(
                            a.producer_id.0,
                            t.name.0.to_string(),
                            p.partition_index,
                        ));
                        let too_old =
                            now - a.last_timestamp > crate::txn::state::MAX_TIMEOUT_MS as i64;
                        if accounted && !too_old {
                            continue;
                        }
                        n += 1;
                        println!(
                            "{:<40} {:>9} {:>12} {:>6} {:>12} {:>10}",
                            t.name.0.as_str(),
                            p.partition_index,
                            a.producer_id.0,
                            a.producer_epoch,
                            a.current_txn_start_offset,
                            open_for(a.last_timestamp)
                        );
                    }
                }
            }
            eprintln!("{n} hanging transaction(s)");
        }
        TxnCmd::Abort {
            topic,
            partition,
            producer_id,
            conn,
        } => {
            let mut c = conn.connect().await?;
            // The marker carries the producer's current epoch here, as kafka-transactions.sh
            // takes it from DescribeProducers.
            let v = c
                .version(ApiKey::DescribeProducers, 0)
                .context("broker does not support DescribeProducers")?;
            let resp = c
                .call(
                    &DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                        .with_name(TopicName(sb(&topic)))
                        .with_partition_indexes(vec![partition])]),
                    v,
                )
                .await?;
            let p = resp
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .context("empty DescribeProducers response")?;
            if p.error_code != 0 {
                bail!("{topic}-{partition}: {}", kafka_error(p.error_code, None));
            }
            let Some(state) = p
                .active_producers
                .iter()
                .find(|a| a.producer_id.0 == producer_id && a.current_txn_start_offset >= 0)
            else {
                bail!("producer {producer_id} has no open transaction in {topic}-{partition}");
            };
            let marker = WritableTxnMarker::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(state.producer_epoch as i16)
                .with_transaction_result(false)
                .with_coordinator_epoch(0)
                .with_topics(vec![WritableTxnMarkerTopic::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_partition_indexes(vec![partition])]);
            let v = c
                .version(ApiKey::WriteTxnMarkers, 1)
                .context("broker does not support WriteTxnMarkers")?;
            let resp = c
                .call(
                    &WriteTxnMarkersRequest::default().with_markers(vec![marker]),
                    v,
                )
                .await?;
            let e = resp
                .markers
                .first()
                .and_then(|m| m.topics.first())
                .and_then(|t| t.partitions.first())
                .map(|p| p.error_code)
                .context("empty WriteTxnMarkers response")?;
            if e != 0 {
                bail!("abort failed: {}", kafka_error(e, None));
            }
            println!(
                "aborted producer {producer_id}'s transaction in {topic}-{partition} (from offset {})",
                state.current_txn_start_offset
            );
        }
    }
    Ok(())
}
