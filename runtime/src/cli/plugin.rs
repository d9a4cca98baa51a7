//! `sluice plugin ...`: making and building processing plugins, and watching and rewinding
//! the pipelines a broker runs.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::plugin::build;

#[derive(clap::Subcommand, Debug)]
pub enum PluginCmd {
    /// Create a plugin NAME/ (a crate, or a Python or TypeScript module) with a pipeline
    /// manifest NAME/NAME.toml
    New {
        name: String,
        /// Where to create it
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// rust, python, js (TypeScript) or c
        #[arg(long, default_value = "rust")]
        lang: String,
    },
    /// Build a plugin into a component (or every plugin of a cargo workspace)
    ///
    /// The component is written to DIR/<name>.wasm, next to the manifest `plugin new` made.
    /// Rust: uses the wasm32-unknown-unknown target if installed, else Debian's rustc-web
    /// with rust-web-src. Python (app.py): componentize-py. JavaScript or TypeScript (app.js,
    /// app.ts): rolldown and ComponentizeJS from the plugin's node_modules (npm install).
    Build {
        /// The crate's (or workspace's) directory
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The component's path; for a workspace, the directory for all of them
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Turn a wasm32 core module built with the WIT bindings (e.g. from C) into a component
    Componentize {
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Pipelines of a running broker: status, version, lag per partition, records in, out,
    /// dead-lettered, last error. With --workers GROUP: the pipelines `sluice worker`s of that
    /// group run on the cluster at --bootstrap, which worker has each task, and its lag
    List {
        #[command(flatten)]
        admin: AdminConn,
        /// The workers' --group
        #[arg(long, value_name = "GROUP")]
        workers: Option<String>,
        #[command(flatten)]
        conn: super::Conn,
        #[command(flatten)]
        out: super::Output,
    },
    /// Deploy a pipeline through the cluster at --bootstrap: NAME.toml and the component it
    /// names go to the compacted topic GROUP.deployments, which every `sluice worker` of the
    /// group follows (each checks it, and hot-reloads a running pipeline at a batch boundary,
    /// state carried). Without --workers, to a sluice broker's own plugin host
    /// (sluice.deployments, its deployments_group)
    Deploy {
        manifest: PathBuf,
        /// The workers' --group [default: sluice, a broker's own plugin host]
        #[arg(long, value_name = "GROUP")]
        workers: Option<String>,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Take a pipeline deployed with `plugin deploy` away from a group's workers (its
    /// progress stays in its changelog)
    Undeploy {
        name: String,
        /// The workers' --group [default: sluice, a broker's own plugin host]
        #[arg(long, value_name = "GROUP")]
        workers: Option<String>,
        #[command(flatten)]
        conn: super::Conn,
    },
    /// Move a pipeline's input position (its state is emptied unless --keep-state), and with
    /// --downstream those of the pipelines after it
    Reset {
        name: String,
        /// earliest, latest, an offset, @MILLISECONDS or a UTC time (2026-11-26T04:00:00Z)
        #[arg(long)]
        to: String,
        /// Keep the plugins' state instead of starting from an empty one
        #[arg(long)]
        keep_state: bool,
        /// Also reset every pipeline reading what NAME writes (transitively), in the same
        /// step: each reads the topics the chain rewrites from their end, so it sees exactly
        /// the replay, and its other inputs from --to. Rewinding a chain one pipeline at a
        /// time while it runs lets the downstream one take in the live run in between
        #[arg(long)]
        downstream: bool,
        #[command(flatten)]
        admin: AdminConn,
    },
}

/// Where the broker's admin API is, and its token if it requires one.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminConn {
    /// The broker's admin API
    #[arg(long, env = "SLUICE_ADMIN", default_value = "127.0.0.1:9644")]
    pub admin: String,
    /// The admin API's token (the broker's admin_token)
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

pub fn run(cmd: PluginCmd) -> Result<()> {
    match cmd {
        PluginCmd::New { name, dir, lang } => {
            use crate::plugin::langs::{self, Lang};
            let crate_dir = match Lang::parse(&lang)? {
                Lang::Rust => build::scaffold(&name, &dir)?,
                other => langs::scaffold(&name, &dir, other)?,
            };
            println!("created {}", crate_dir.display());
            println!("build it with: sluice plugin build {}", crate_dir.display());
            Ok(())
        }
        PluginCmd::Build { dir, out } => {
            let started = std::time::Instant::now();
            for path in &build::build(&dir, out.as_deref())? {
                report(path);
            }
            eprintln!("built in {:.1}s", started.elapsed().as_secs_f64());
            Ok(())
        }
        PluginCmd::Componentize { input, out } => {
            build::componentize_path(&input, &out)?;
            report(&out);
            Ok(())
        }
        PluginCmd::List {
            workers: Some(group),
            conn,
            out,
            ..
        } => list_workers(&group, &conn, out),
        PluginCmd::List { admin, out, .. } => super::admin::list(&admin, out),
        PluginCmd::Deploy {
            manifest,
            workers,
            conn,
        } => publish(&manifest, workers.as_deref(), &conn, false),
        PluginCmd::Undeploy {
            name,
            workers,
            conn,
        } => publish(
            Path::new(&format!("{name}.toml")),
            workers.as_deref(),
            &conn,
            true,
        ),
        PluginCmd::Reset {
            name,
            to,
            keep_state,
            downstream,
            admin,
        } => super::admin::reset(&admin, &name, &to, keep_state, downstream),
    }
}

fn report(path: &Path) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("{} ({} KiB)", path.display(), size.div_ceil(1024));
}

/// Each pipeline of a worker group is consumer group GROUP.PIPELINE: its members are the
/// workers, its partitions the tasks. Through librdkafka, which asks every broker of a cluster
/// for its groups, each group's coordinator for its members and offsets, and each partition's
/// leader for its end.
fn list_workers(group: &str, conn: &super::Conn, out: super::Output) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::TopicPartitionList;
    let timeout = std::time::Duration::from_secs(10);
    let cfg = super::worker::rdkafka_config(conn, "sluice-cli")?;
    let c: BaseConsumer = cfg.create()?;
    let list = c.fetch_group_list(None, timeout)?;
    let prefix = format!("{group}.");
    let mut groups: Vec<_> = list
        .groups()
        .iter()
        .filter(|g| g.name().starts_with(&prefix))
        .collect();
    groups.sort_by_key(|g| g.name().to_string());
    if groups.is_empty() && !out.json() {
        println!("no pipelines of worker group '{group}' on this cluster");
        return Ok(());
    }
    if !out.json() {
        println!(
            "{:<24} {:<24} {:>9} {:>12} {:>8}  WORKER",
            "PIPELINE", "TOPIC", "PARTITION", "COMMITTED", "LAG"
        );
    }
    let mut json = Vec::new();
    for g in groups {
        let pipeline = &g.name()[prefix.len()..];
        let mut owner = std::collections::BTreeMap::new();
        for m in g.members() {
            let who = format!("{} ({})", m.client_id(), m.client_host());
            let assignment = m.assignment().map(bytes::Bytes::copy_from_slice);
            for tp in super::group::assigned(assignment.unwrap_or_default()) {
                owner.insert(tp, who.clone());
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p) in owner.keys() {
            tpl.add_partition(t, *p);
        }
        let committed = cfg
            .clone()
            .set("group.id", g.name())
            .create::<BaseConsumer>()
            .and_then(|gc| gc.committed_offsets(tpl, timeout))
            .ok();
        for ((topic, partition), who) in &owner {
            let at = committed
                .as_ref()
                .and_then(|t| t.find_partition(topic, *partition))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0);
            let end = c
                .fetch_watermarks(topic, *partition, timeout)
                .ok()
                .map(|w| w.1);
            let lag = at.zip(end).map(|(a, e)| (e - a).max(0));
            if out.json() {
                json.push(serde_json::json!({
                    "pipeline": pipeline, "topic": topic, "partition": partition,
                    "committed": at, "lag": lag, "worker": who,
                }));
                continue;
            }
            let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "{pipeline:<24} {topic:<24} {partition:>9} {:>12} {:>8}  {who}",
                show(at),
                show(lag)
            );
        }
        if !out.json() {
            println!(
                "{pipeline:<24} group {}, {} worker(s)",
                g.state(),
                g.members().len()
            );
        }
    }
    if out.json() {
        super::print_json(&serde_json::Value::Array(json));
    }
    Ok(())
}

fn publish(manifest: &Path, group: Option<&str>, conn: &super::Conn, undeploy: bool) -> Result<()> {
    let group = group.unwrap_or(crate::plugin::deployments::BROKER_GROUP);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cfg = super::worker::rdkafka_config(conn, "sluice-cli")?;
    let (topic, offset) =
        crate::worker::deploy::publish(&cfg, rt.handle(), group, manifest, undeploy)
            .map_err(anyhow::Error::msg)?;
    let what = if undeploy { "undeployed" } else { "deployed" };
    println!(
        "{} {what} through {topic} (offset {offset}): to the workers of group '{group}'{}",
        manifest.file_stem().and_then(|s| s.to_str()).unwrap_or("?"),
        if group == crate::plugin::deployments::BROKER_GROUP {
            " and to a sluice broker's own plugin host"
        } else {
            ""
        }
    );
    Ok(())
}
