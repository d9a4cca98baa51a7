//! `sluice plugin ...`: making and building processing plugins, and watching and rewinding
//! the pipelines a broker runs.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::plugin::build;

#[derive(clap::Subcommand, Debug)]
pub enum PluginCmd {
    /// Create a plugin crate NAME/ with a pipeline manifest NAME/NAME.toml
    New {
        name: String,
        /// Where to create the crate
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build a plugin crate into a component (or every plugin of a cargo workspace)
    ///
    /// The component is written to DIR/<package>.wasm, next to the manifest `plugin new`
    /// made. Uses the wasm32-unknown-unknown target if installed, else Debian's rustc-web
    /// with rust-web-src.
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
    /// dead-lettered, last error
    List {
        #[command(flatten)]
        admin: AdminConn,
    },
    /// Move a pipeline's input position (its state is emptied unless --keep-state)
    Reset {
        name: String,
        /// earliest, latest, an offset, @MILLISECONDS or a UTC time (2026-11-26T04:00:00Z)
        #[arg(long)]
        to: String,
        /// Keep the plugin's state instead of starting from an empty one
        #[arg(long)]
        keep_state: bool,
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
        PluginCmd::New { name, dir } => {
            let crate_dir = build::scaffold(&name, &dir)?;
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
        PluginCmd::List { admin } => super::admin::list(&admin),
        PluginCmd::Reset {
            name,
            to,
            keep_state,
            admin,
        } => super::admin::reset(&admin, &name, &to, keep_state),
    }
}

fn report(path: &Path) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!("{} ({} KiB)", path.display(), size.div_ceil(1024));
}
