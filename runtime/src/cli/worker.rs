//! `sluice worker`: runs the plugins directory's pipelines on any Kafka cluster, sharing
//! their tasks with every other worker of the same group.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use rdkafka::config::ClientConfig;

use crate::worker::{GroupProtocol, Worker, WorkerConfig};

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub conn: super::Conn,
    /// Where pipelines are deployed: manifests (NAME.toml) and their components
    #[arg(long, env = "SLUICE_PLUGINS_DIR", default_value = "./plugins")]
    pub plugins_dir: PathBuf,
    /// Workers with the same group share the pipelines' tasks; each pipeline's consumer group
    /// is GROUP.PIPELINE
    #[arg(long, env = "SLUICE_WORKER_GROUP", default_value = "sluice-workers")]
    pub group: String,
    /// Checkpoint cache and compiled components
    #[arg(
        long,
        env = "SLUICE_STATE_DIR",
        default_value = "./sluice-worker-state"
    )]
    pub state_dir: PathBuf,
    /// consumer (KIP-848, Kafka 4.0+), classic (cooperative-sticky), or auto: consumer where
    /// the cluster offers it
    #[arg(long, value_enum, default_value_t = GroupProtocol::Auto)]
    pub group_protocol: GroupProtocol,
    /// How long a silent worker keeps its tasks (classic protocol; KIP-848 groups take the
    /// broker's group.consumer.session.timeout.ms)
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// Serve /metrics (Prometheus) and /v1/pipelines (what `sluice plugin list --admin` reads:
    /// this worker's pipelines and tasks) on HOST:PORT
    #[arg(long, env = "SLUICE_WORKER_ADMIN")]
    pub admin: Option<String>,
    /// Extra librdkafka client settings, as kcat's -X (e.g. -X socket.timeout.ms=30000)
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub property: Vec<String>,
}

/// librdkafka settings for `conn`: bootstrap list and security, as the other commands take
/// them.
pub(crate) fn rdkafka_config(conn: &super::Conn, client_id: &str) -> Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &conn.bootstrap)
        .set("client.id", client_id)
        .set(
            "security.protocol",
            conn.security_protocol.to_ascii_lowercase(),
        );
    if let Some(ca) = &conn.ca_file {
        c.set("ssl.ca.location", ca.display().to_string());
    }
    if let (Some(cert), Some(key)) = (&conn.cert_file, &conn.key_file) {
        c.set("ssl.certificate.location", cert.display().to_string())
            .set("ssl.key.location", key.display().to_string());
    }
    if conn
        .security_protocol
        .to_ascii_uppercase()
        .starts_with("SASL")
    {
        c.set("sasl.mechanism", &conn.sasl_mechanism)
            .set(
                "sasl.username",
                conn.sasl_username
                    .as_deref()
                    .context("SASL needs --sasl-username")?,
            )
            .set(
                "sasl.password",
                conn.sasl_password
                    .as_deref()
                    .context("SASL needs --sasl-password (or SLUICE_SASL_PASSWORD)")?,
            );
    }
    Ok(c)
}

fn client_config(a: &WorkerArgs) -> Result<ClientConfig> {
    let id = format!(
        "sluice-worker-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
        std::process::id()
    );
    let mut c = rdkafka_config(&a.conn, &id)?;
    for p in &a.property {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("-X {p}: expected KEY=VALUE"))?;
        c.set(k, v);
    }
    Ok(c)
}

/// KIP-848 if the cluster answers ConsumerGroupHeartbeat, else classic. A cluster that cannot
/// be reached within a minute gets classic, which every Kafka since 0.9 speaks.
async fn offered_protocol(conn: &super::Conn) -> GroupProtocol {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match conn.connect().await {
            Ok(c) => {
                let kip848 = c
                    .version(kafka_protocol::messages::ApiKey::ConsumerGroupHeartbeat, 0)
                    .is_some();
                let p = if kip848 {
                    GroupProtocol::Consumer
                } else {
                    GroupProtocol::Classic
                };
                tracing::info!(protocol = ?p, broker = %c.addr, "group protocol chosen from the cluster's ApiVersions");
                return p;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "cluster not reachable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster not reachable; using the classic group protocol");
                return GroupProtocol::Classic;
            }
        }
    }
}

pub fn run(a: WorkerArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let protocol = match a.group_protocol {
        GroupProtocol::Auto => rt.block_on(offered_protocol(&a.conn)),
        p => p,
    };
    let cfg = WorkerConfig {
        client: client_config(&a)?,
        plugins_dir: a.plugins_dir.clone(),
        group: a.group.clone(),
        state_dir: a.state_dir.clone(),
        protocol,
        session_timeout_ms: a.session_timeout_ms,
    };
    let mut worker = Worker::new(cfg, rt.handle().clone())?;
    if let Some(addr) = &a.admin {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("cannot listen on --admin {addr}"))?;
        let status = worker.status.clone();
        rt.spawn(crate::metrics::serve_with(
            listener,
            Arc::new(move |_head: &str, method: &str, target: &str| status.route(method, target)),
        ));
        tracing::info!(%addr, "serving /metrics and /v1/pipelines");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("stopping: every task commits, then leaves its group");
            stop.store(true, Ordering::Release);
        });
    }
    worker.run(&stop);
    Ok(())
}
