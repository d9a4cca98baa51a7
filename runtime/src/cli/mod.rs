//! The `sluice` command line: the broker (`serve`) and the everyday client commands, which talk
//! to a broker over the Kafka protocol like any other client.

mod acl;
mod admin;
mod cluster;
mod consume;
mod demo;
pub(crate) mod group;
mod plugin;
mod produce;
mod quota;
pub mod serve;
mod topic;
mod txn;
mod user;
pub mod worker;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A Kafka-compatible streaming broker", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How listings print: a table for people, JSON for scripts (rpk's and kcat's `--format json`).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Output {
    /// text (a table) or json
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Output {
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Prints `v` as one line of JSON.
pub fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// Broker to talk to
    #[arg(long, env = "SLUICE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (as Kafka clients' security.protocol)
    #[arg(long, env = "SLUICE_SECURITY_PROTOCOL", default_value = "PLAINTEXT")]
    pub security_protocol: String,
    /// PEM CA file the broker's certificate must chain to (SSL, SASL_SSL)
    #[arg(long, env = "SLUICE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate and key, for listeners that require one
    #[arg(long, env = "SLUICE_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    #[arg(long, env = "SLUICE_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER (the token as --sasl-password)
    #[arg(long, env = "SLUICE_SASL_MECHANISM", default_value = "SCRAM-SHA-256")]
    pub sasl_mechanism: String,
    #[arg(long, env = "SLUICE_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    #[arg(long, env = "SLUICE_SASL_PASSWORD", hide_env_values = true)]
    pub sasl_password: Option<String>,
}

impl Conn {
    pub fn security(&self) -> Result<crate::client::Security> {
        use crate::client::{SaslLogin, Security, TlsOptions};
        let (tls, sasl) = match self.security_protocol.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => anyhow::bail!(
                "--security-protocol {other}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
            ),
        };
        let sasl = if sasl {
            let mechanism =
                crate::auth::sasl::Mech::from_name(&self.sasl_mechanism).with_context(|| {
                    format!(
                        "--sasl-mechanism {}: use SCRAM-SHA-256, SCRAM-SHA-512, PLAIN or OAUTHBEARER",
                        self.sasl_mechanism
                    )
                })?;
            Some(SaslLogin {
                mechanism,
                // OAUTHBEARER's token names the principal.
                username: match mechanism {
                    crate::auth::sasl::Mech::OAuthBearer => {
                        self.sasl_username.clone().unwrap_or_default()
                    }
                    _ => self
                        .sasl_username
                        .clone()
                        .context("SASL needs --sasl-username")?,
                },
                password: self
                    .sasl_password
                    .clone()
                    .context("SASL needs --sasl-password (or SLUICE_SASL_PASSWORD)")?,
            })
        } else {
            None
        };
        Ok(Security {
            tls: tls.then(|| TlsOptions {
                ca_file: self.ca_file.clone(),
                cert_and_key: self.cert_file.clone().zip(self.key_file.clone()),
            }),
            sasl,
        })
    }

    /// A connection to the bootstrap broker, secured as the flags say.
    pub async fn connect(&self) -> Result<crate::client::Client> {
        Ok(crate::client::Client::connect_secured(&self.bootstrap, &self.security()?).await?)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker
    Serve(serve::ServeArgs),
    /// Create, list, describe, reconfigure and delete topics
    #[command(subcommand)]
    Topic(topic::TopicCmd),
    /// Consumer groups: list, describe with lag, reset offsets, delete
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Transactions: list, describe, find and abort hanging ones
    #[command(subcommand)]
    Txn(txn::TxnCmd),
    /// Produce lines from stdin, one record per line
    Produce(produce::ProduceArgs),
    /// Print records of a topic, one per line
    Consume(consume::ConsumeArgs),
    /// Processing plugins: create, build, list, reset
    #[command(subcommand)]
    Plugin(plugin::PluginCmd),
    /// ACLs: add, list, remove (enforced with `authorizer = "acl"`)
    #[command(subcommand)]
    Acl(acl::AclCmd),
    /// Client quotas (byte rates, request percentage) of users and client ids: set, delete,
    /// list
    #[command(subcommand)]
    Quota(quota::QuotaCmd),
    /// SCRAM users (SASL/SCRAM and SASL/PLAIN logins): create, list, delete
    #[command(subcommand)]
    User(user::UserCmd),
    /// The cluster: id, controller and brokers (info); whether it answers and every partition
    /// has a leader (health)
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Run the click-aggregation example live: a broker, three pipelines, a click generator
    Demo(demo::DemoArgs),
    /// Run the plugins directory's pipelines on any Kafka cluster (no broker in this process);
    /// workers with the same --group share the tasks, exactly once
    Worker(worker::WorkerArgs),
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(cli: Cli) -> Result<()> {
    crate::logging::init();
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Topic(c) => client_runtime()?.block_on(topic::run(c)),
        Command::Group(c) => client_runtime()?.block_on(group::run(c)),
        Command::Txn(c) => client_runtime()?.block_on(txn::run(c)),
        Command::Produce(a) => client_runtime()?.block_on(produce::run(a)),
        Command::Consume(a) => client_runtime()?.block_on(consume::run(a)),
        Command::Plugin(c) => plugin::run(c),
        Command::Acl(c) => client_runtime()?.block_on(acl::run(c)),
        Command::Quota(c) => client_runtime()?.block_on(quota::run(c)),
        Command::User(c) => client_runtime()?.block_on(user::run(c)),
        Command::Cluster(c) => client_runtime()?.block_on(cluster::run(c)),
        Command::Demo(a) => client_runtime()?.block_on(demo::run(a)),
        Command::Worker(a) => worker::run(a),
    }
}

/// Turns a Kafka error code into a readable line.
pub(crate) fn kafka_error(code: i16, message: Option<&str>) -> String {
    let name = kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error code {code}"));
    match message {
        Some(m) if !m.is_empty() => format!("{name}: {m}"),
        _ => name,
    }
}
