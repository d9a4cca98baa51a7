//! `sluice cluster info` and `sluice cluster health`: what rpk's `cluster info` and
//! `cluster health` answer, from any Kafka-protocol broker (DescribeCluster, Metadata).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::{ApiKey, DescribeClusterRequest};

use super::topic::metadata;
use super::{kafka_error, print_json, Conn, Output};

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCmd {
    /// Cluster id, controller, brokers and topic count
    Info {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Whether the cluster answers: every broker up and unfenced, every partition with a
    /// leader. Exits non-zero otherwise, so scripts and probes can use it
    Health {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: ClusterCmd) -> Result<()> {
    let (out, conn, health) = match cmd {
        ClusterCmd::Info { out, conn } => (out, conn, false),
        ClusterCmd::Health { out, conn } => (out, conn, true),
    };
    let started = Instant::now();
    let mut c = conn.connect().await?;
    let v = c
        .version(ApiKey::DescribeCluster, 1)
        .context("the broker does not support DescribeCluster")?;
    let d = c.call(&DescribeClusterRequest::default(), v).await?;
    if d.error_code != 0 {
        bail!(
            "DescribeCluster: {}",
            kafka_error(d.error_code, d.error_message.as_deref())
        );
    }
    let md = metadata(&mut c, None).await?;
    let took_ms = started.elapsed().as_millis();
    let leaderless: Vec<String> = md
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.as_ref().map_or("?", |n| n.0.as_str()).to_string();
            t.partitions
                .iter()
                .filter(|p| p.leader_id.0 < 0 || p.error_code != 0)
                .map(move |p| format!("{name}/{}", p.partition_index))
        })
        .collect();
    let fenced: Vec<i32> = d
        .brokers
        .iter()
        .filter(|b| b.is_fenced)
        .map(|b| b.broker_id.0)
        .collect();
    let healthy = leaderless.is_empty() && fenced.is_empty() && !d.brokers.is_empty();
    if out.json() {
        print_json(&serde_json::json!({
            "cluster_id": d.cluster_id.as_str(),
            "controller_id": d.controller_id.0,
            "brokers": d.brokers.iter().map(|b| serde_json::json!({
                "id": b.broker_id.0,
                "host": b.host.as_str(),
                "port": b.port,
                "rack": b.rack.as_deref(),
                "fenced": b.is_fenced,
            })).collect::<Vec<_>>(),
            "topics": md.topics.len(),
            "partitions": md.topics.iter().map(|t| t.partitions.len()).sum::<usize>(),
            "healthy": healthy,
            "leaderless_partitions": leaderless,
            "answered_in_ms": took_ms,
        }));
    } else if health {
        println!(
            "{} (answered in {took_ms} ms; {} broker(s), {} leaderless partition(s), {} fenced broker(s))",
            if healthy { "healthy" } else { "UNHEALTHY" },
            d.brokers.len(),
            leaderless.len(),
            fenced.len()
        );
        for p in leaderless.iter().take(20) {
            println!("  no leader: {p}");
        }
    } else {
        println!("CLUSTER     {}", d.cluster_id.as_str());
        println!("CONTROLLER  {}", d.controller_id.0);
        println!(
            "TOPICS      {} ({} partitions)",
            md.topics.len(),
            md.topics.iter().map(|t| t.partitions.len()).sum::<usize>()
        );
        println!();
        println!("{:<6} {:<30} {:<8} FENCED", "ID", "HOST:PORT", "RACK");
        for b in &d.brokers {
            println!(
                "{:<6} {:<30} {:<8} {}",
                b.broker_id.0,
                format!("{}:{}", b.host.as_str(), b.port),
                b.rack.as_deref().unwrap_or("-"),
                b.is_fenced
            );
        }
    }
    if health && !healthy {
        bail!("the cluster is not healthy");
    }
    Ok(())
}
