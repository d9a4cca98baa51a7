//! `sluice serve`: run the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::broker::config::{validate, Defaults};
use crate::broker::{Broker, BrokerConfig};

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Address to accept Kafka clients on [default: 127.0.0.1:9092]
    #[arg(long)]
    pub listen: Option<String>,
    /// Address given to clients in metadata [default: the listen address]
    #[arg(long)]
    pub advertised: Option<String>,
    /// Where topics are stored [default: ./sluice-data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics
    #[arg(long)]
    pub metrics: Option<String>,
    /// Admin API (used by `sluice plugin list|reset`, also serves /metrics) [default: 127.0.0.1:9644]
    #[arg(long)]
    pub admin: Option<String>,
    /// Directory watched for pipelines (NAME.toml + component) [default: ./plugins]
    #[arg(long)]
    pub plugins_dir: Option<PathBuf>,
    /// The plugin host also runs what `sluice plugin deploy --workers GROUP` publishes to
    /// this broker's GROUP.deployments topic; "" turns that off [default: sluice]
    #[arg(long, value_name = "GROUP")]
    pub deployments_group: Option<String>,
    /// Threads that run the pipelines' tasks, all of them in turn [default: 4 per core]
    #[arg(long, value_name = "N")]
    pub plugin_threads: Option<usize>,
    /// Token the admin API requires (`Authorization: Bearer TOKEN`); needed when --admin is
    /// not a loopback address
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// TOML file; every flag has a key of the same name (with '_' for '-')
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The config file. Unknown keys are refused so a typo never goes unnoticed.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised: Option<String>,
    data_dir: Option<PathBuf>,
    metrics: Option<String>,
    admin: Option<String>,
    admin_token: Option<String>,
    plugins_dir: Option<PathBuf>,
    deployments_group: Option<String>,
    plugin_threads: Option<usize>,
    node_id: Option<i32>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<i32>,
    retention_check_ms: Option<u64>,
    /// Kafka's log.cleaner.backoff.ms: how often the log cleaner looks for work.
    log_cleaner_backoff_ms: Option<u64>,
    /// Kafka's log.cleaner.threads: compacted partitions cleaned at once.
    log_cleaner_threads: Option<usize>,
    /// Kafka's log.cleaner.dedupe.buffer.size: memory for the cleaner's key map, in bytes.
    log_cleaner_dedupe_buffer_size: Option<usize>,
    /// Kafka's log.cleaner.io.max.bytes.per.second (default: no limit).
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// The transactions version offered to clients: 2 (KIP-890, as Kafka 4) or 1.
    transaction_version: Option<i16>,
    /// Kafka's group.min.session.timeout.ms / group.max.session.timeout.ms /
    /// group.initial.rebalance.delay.ms.
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    /// KIP-848 groups: Kafka's group.consumer.session.timeout.ms and
    /// group.consumer.heartbeat.interval.ms.
    group_consumer_session_timeout_ms: Option<i64>,
    group_consumer_heartbeat_interval_ms: Option<i32>,
    group_initial_rebalance_delay_ms: Option<i64>,
    /// Groups the coordinator keeps at most (see `limits`).
    max_groups: Option<usize>,
    /// "latest" (Kafka's default) or "earliest": where a share group starts on a partition.
    share_auto_offset_reset: Option<String>,
    /// "fsync": every produce is acknowledged only once its records are on disk (topics
    /// default to flush.messages = 1), and the broker's own logs (committed offsets,
    /// transactions) are fsynced at every write. Default "os": the page cache, as Kafka.
    durability: Option<String>,
    /// Kafka's max.connections and max.connections.per.ip (see `limits.rs`).
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    /// Kafka's broker fetch.max.bytes: the most one fetch response carries.
    fetch_max_bytes: Option<usize>,
    /// Plaintext fetches send records from the segment files with sendfile, as Kafka does
    /// (default true); false reads them into memory and writes them.
    fetch_sendfile: Option<bool>,
    /// Floors on topics' segment.bytes and segment.ms (see `limits.rs`).
    segment_bytes_min: Option<u64>,
    segment_ms_min: Option<u64>,
    /// Idempotent producers remembered per partition (see `limits`).
    max_producer_ids_per_partition: Option<usize>,
    /// Large requests and fetch responses held at once (see `limits/memory.rs`).
    max_in_flight_bytes: Option<usize>,
    /// Kafka's `connections.max.idle.ms` (see `limits/mod.rs`); -1 turns it off, as Kafka's.
    connections_max_idle_ms: Option<i64>,
    /// Named listeners, each with its security protocol (see [`ListenerConfig`]).
    #[serde(default)]
    listeners: Vec<ListenerConfig>,
    /// Kafka's sasl.enabled.mechanisms (default: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN).
    sasl_mechanisms: Option<Vec<String>>,
    /// SASL/OAUTHBEARER: how tokens are checked (its presence offers the mechanism).
    oauthbearer: Option<crate::auth::oauth::OAuthSettings>,
    /// Kafka's connections.max.reauth.ms (KIP-368); 0 (default): sessions do not expire.
    connections_max_reauth_ms: Option<u64>,
    /// "acl": enforce ACLs (Kafka's authorizer.class.name); default "none": everyone may
    /// do everything, as on a Kafka broker without an authorizer.
    authorizer: Option<String>,
    /// Kafka's allow.everyone.if.no.acl.found (default false).
    allow_everyone_if_no_acl_found: Option<bool>,
    /// Kafka's super.users, e.g. ["User:admin"].
    #[serde(default)]
    super_users: Vec<String>,
    /// Broker-wide defaults for topic configs, by Kafka key (e.g. "retention.ms").
    #[serde(default)]
    topic_defaults: std::collections::BTreeMap<String, toml::Value>,
}

/// One `[[listeners]]` entry: Kafka's `listeners` + `advertised.listeners` +
/// `listener.security.protocol.map` + the listener's `ssl.*` settings in one place.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ListenerConfig {
    name: String,
    address: String,
    /// What clients are told to connect to [default: address].
    advertised: Option<String>,
    security: crate::auth::Security,
    /// PEM certificate chain and private key (SSL and SASL_SSL).
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    client_ca: Option<PathBuf>,
    /// Kafka's ssl.client.auth: "none" (default), "requested" or "required".
    #[serde(default)]
    client_auth: crate::auth::tls::ClientAuth,
}

/// A listener to bind.
pub struct ListenerSettings {
    pub address: String,
    pub listener: crate::auth::Listener,
    pub tls: Option<crate::auth::tls::TlsFiles>,
}

pub struct Settings {
    pub listeners: Vec<ListenerSettings>,
    pub metrics: Option<String>,
    pub admin: String,
    pub admin_token: Option<String>,
    pub plugins_dir: PathBuf,
    /// Whose deployments topic the plugin host follows.
    pub deployments_group: Option<String>,
    pub plugin_threads: usize,
    pub broker: BrokerConfig,
}

fn split_host_port(s: &str) -> Result<(String, i32)> {
    let (host, port) = s
        .rsplit_once(':')
        .with_context(|| format!("'{s}' is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("'{s}' has an invalid port"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}

pub fn settings(args: ServeArgs) -> Result<Settings> {
    let file = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("invalid config file {}", p.display()))?
        }
        None => FileConfig::default(),
    };
    let listeners = listeners(
        args.listen.or(file.listen),
        args.advertised.or(file.advertised),
        file.listeners,
    )?;
    let listed = file.sasl_mechanisms.is_some();
    let mut sasl_mechanisms: Vec<crate::auth::sasl::Mech> = match file.sasl_mechanisms {
        None => crate::auth::sasl::Mech::ALL.to_vec(),
        Some(names) => names
            .iter()
            .map(|n| {
                crate::auth::sasl::Mech::from_name(n).with_context(|| {
                    format!("sasl_mechanisms: \"{n}\" is not one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN, OAUTHBEARER")
                })
            })
            .collect::<Result<_>>()?,
    };
    let explicit = sasl_mechanisms.contains(&crate::auth::sasl::Mech::OAuthBearer);
    let oauth = match file.oauthbearer {
        Some(o) => {
            if o.jwks_file.is_none() && !o.unsecured {
                bail!("[oauthbearer]: set jwks_file (the keys tokens are signed with), or unsecured = true for development");
            }
            // Configuring it offers it, unless the mechanisms are listed without it.
            if !listed {
                sasl_mechanisms.push(crate::auth::sasl::Mech::OAuthBearer);
            }
            Some(Arc::new(
                crate::auth::oauth::OAuth::new(o).context("[oauthbearer]")?,
            ))
        }
        None if explicit => {
            bail!("sasl_mechanisms lists OAUTHBEARER: configure it in an [oauthbearer] table")
        }
        None => None,
    };
    for u in &file.super_users {
        if !u.starts_with("User:") {
            bail!("super_users: \"{u}\" is not a principal (write it as User:NAME)");
        }
    }
    let mut defaults = Defaults::default();
    for (k, v) in file.topic_defaults {
        let v = match v {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        validate(&k, &v).with_context(|| "invalid [topic_defaults] in config file")?;
        defaults.values.insert(k, v);
    }
    let durable = match file.durability.as_deref() {
        None | Some("os") => false,
        Some("fsync") => true,
        Some(other) => bail!("durability must be \"fsync\" or \"os\", not \"{other}\""),
    };
    if durable {
        defaults
            .values
            .entry("flush.messages".to_string())
            .or_insert_with(|| "1".to_string());
    }
    let floors = {
        let d = crate::limits::Limits::default();
        crate::limits::Limits {
            segment_bytes_min: file.segment_bytes_min.unwrap_or(d.segment_bytes_min),
            segment_ms_min: file.segment_ms_min.unwrap_or(d.segment_ms_min),
            ..d
        }
    };
    crate::broker::check_segment_floors(
        &crate::broker::config::TopicConfig::default().log_config(&defaults),
        &floors,
    )
    .context("invalid [topic_defaults] in config file")?;
    let default_partitions = file.default_partitions.unwrap_or(1);
    if !(1..=10_000).contains(&default_partitions) {
        bail!("default_partitions must be between 1 and 10000");
    }
    let admin = args
        .admin
        .or(file.admin)
        .unwrap_or_else(|| "127.0.0.1:9644".into());
    let admin_token = args
        .admin_token
        .or(file.admin_token)
        .filter(|t| !t.is_empty());
    // Anyone who reaches the admin API can reset pipelines: beyond this machine, only with
    // a token.
    let loopback = split_host_port(&admin).is_ok_and(|(h, _)| {
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if !loopback && admin_token.is_none() {
        bail!("the admin API on {admin} would be open to the network: set admin_token (or --admin-token / SLUICE_ADMIN_TOKEN), or bind it to a loopback address");
    }
    let deployments_group = match args.deployments_group.or(file.deployments_group) {
        None => Some(crate::plugin::deployments::BROKER_GROUP.to_string()),
        Some(g) if g.is_empty() => None,
        Some(g) => Some(g),
    };
    Ok(Settings {
        listeners,
        metrics: args.metrics.or(file.metrics),
        admin,
        admin_token,
        plugins_dir: args
            .plugins_dir
            .or(file.plugins_dir)
            .unwrap_or_else(|| PathBuf::from("./plugins")),
        deployments_group: deployments_group.clone(),
        plugin_threads: args
            .plugin_threads
            .or(file.plugin_threads)
            .unwrap_or_else(crate::plugin::pool::default_threads),
        broker: BrokerConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./sluice-data")),
            node_id: file.node_id.unwrap_or(1),
            auth: crate::auth::AuthConfig {
                sasl_mechanisms,
                oauth,
                max_reauth_ms: file.connections_max_reauth_ms.unwrap_or(0),
                super_users: file.super_users,
                operator_topics: deployments_group
                    .as_deref()
                    .map(crate::plugin::deployments::topic)
                    .into_iter()
                    .collect(),
                acl: crate::auth::acl::AclConfig {
                    enabled: match file.authorizer.as_deref() {
                        None | Some("none") => false,
                        Some("acl") => true,
                        Some(other) => {
                            bail!("authorizer must be \"acl\" or \"none\", not \"{other}\"")
                        }
                    },
                    allow_everyone_if_no_acl_found: file
                        .allow_everyone_if_no_acl_found
                        .unwrap_or(false),
                },
            },
            auto_create_topics: file.auto_create_topics.unwrap_or(true),
            default_partitions,
            defaults,
            retention_check_ms: file.retention_check_ms.unwrap_or(30_000).max(10),
            // Floored where it is read (`Broker::cleaner_backoff_ms`), with the dynamic value.
            cleaner_backoff_ms: file
                .log_cleaner_backoff_ms
                .unwrap_or(crate::broker::DEFAULT_CLEANER_BACKOFF_MS),
            cleaner_threads: file
                .log_cleaner_threads
                .unwrap_or(crate::broker::DEFAULT_CLEANER_THREADS)
                .clamp(1, crate::broker::MAX_CLEANER_THREADS),
            cleaner_dedupe_buffer_bytes: file
                .log_cleaner_dedupe_buffer_size
                .unwrap_or(crate::broker::DEFAULT_CLEANER_DEDUPE_BYTES)
                .max(1 << 20),
            cleaner_io_bytes_per_sec: file.log_cleaner_io_max_bytes_per_second,
            transaction_version: file.transaction_version.unwrap_or(2).clamp(1, 2),
            durable_internal_logs: durable,
            fetch_sendfile: file.fetch_sendfile.unwrap_or(true),
            limits: {
                let d = crate::limits::Limits::default();
                crate::limits::Limits {
                    max_connections: file.max_connections.unwrap_or(d.max_connections).max(1),
                    max_connections_per_ip: file
                        .max_connections_per_ip
                        .unwrap_or(d.max_connections_per_ip)
                        .max(1),
                    // At least one batch of the largest size a topic may hold.
                    fetch_max_bytes: file
                        .fetch_max_bytes
                        .unwrap_or(d.fetch_max_bytes)
                        .max(1 << 20),
                    segment_bytes_min: file.segment_bytes_min.unwrap_or(d.segment_bytes_min),
                    segment_ms_min: file.segment_ms_min.unwrap_or(d.segment_ms_min),
                    // Below a few per partition, ordinary producers would evict each other.
                    max_producer_ids_per_partition: file
                        .max_producer_ids_per_partition
                        .unwrap_or(d.max_producer_ids_per_partition)
                        .max(10),
                    // Below the largest request, that request would be served alone.
                    max_in_flight_bytes: file
                        .max_in_flight_bytes
                        .unwrap_or(d.max_in_flight_bytes)
                        .max(16 << 20),
                    // Under a second, a client between two requests would be cut off.
                    connections_max_idle_ms: match file.connections_max_idle_ms {
                        None => d.connections_max_idle_ms,
                        Some(ms) if ms < 0 => u64::MAX,
                        Some(ms) => ms.unsigned_abs().max(1000),
                    },
                }
            },
            groups: {
                let d = crate::group::state::GroupConfig::default();
                crate::group::state::GroupConfig {
                    min_session_timeout_ms: file
                        .group_min_session_timeout_ms
                        .unwrap_or(d.min_session_timeout_ms),
                    max_session_timeout_ms: file
                        .group_max_session_timeout_ms
                        .unwrap_or(d.max_session_timeout_ms),
                    initial_rebalance_delay_ms: file
                        .group_initial_rebalance_delay_ms
                        .unwrap_or(d.initial_rebalance_delay_ms),
                    // Kafka's floors: 1 s heartbeats, sessions longer than a heartbeat.
                    consumer_heartbeat_interval_ms: file
                        .group_consumer_heartbeat_interval_ms
                        .unwrap_or(d.consumer_heartbeat_interval_ms)
                        .max(1_000),
                    consumer_session_timeout_ms: file
                        .group_consumer_session_timeout_ms
                        .unwrap_or(d.consumer_session_timeout_ms)
                        .max(2_000),
                    share_from_earliest: match file.share_auto_offset_reset.as_deref() {
                        None | Some("latest") => false,
                        Some("earliest") => true,
                        Some(other) => bail!(
                            "share_auto_offset_reset must be \"earliest\" or \"latest\", not \"{other}\""
                        ),
                    },
                    max_groups: file.max_groups.unwrap_or(d.max_groups).max(1),
                }
            },
        },
    })
}

fn is_wildcard(host: &str) -> bool {
    host == "0.0.0.0" || host == "::" || host.is_empty()
}

/// The listeners to bind: the `[[listeners]]` of the config file, and a PLAINTEXT one on
/// `listen` (--listen) if that is given or if there are no others (the embedded default,
/// 127.0.0.1:9092).
fn listeners(
    listen: Option<String>,
    advertised: Option<String>,
    configured: Vec<ListenerConfig>,
) -> Result<Vec<ListenerSettings>> {
    use crate::auth::{Listener, Security};
    let mut out: Vec<ListenerSettings> = Vec::new();
    if listen.is_some() || configured.is_empty() {
        let listen = listen.unwrap_or_else(|| "127.0.0.1:9092".into());
        let advertised = advertised.unwrap_or(listen.clone());
        let (host, port) = split_host_port(&advertised)?;
        if is_wildcard(&host) {
            bail!("the advertised address {advertised} is a wildcard: clients cannot connect to it; pass --advertised HOST:PORT");
        }
        out.push(ListenerSettings {
            address: listen,
            listener: Listener {
                name: "PLAINTEXT".into(),
                security: Security::Plaintext,
                advertised_host: host,
                advertised_port: port,
            },
            tls: None,
        });
    } else if advertised.is_some() {
        bail!("advertised applies to listen; give each [[listeners]] entry its own advertised address");
    }
    for l in configured {
        let advertised = l.advertised.clone().unwrap_or(l.address.clone());
        let (host, port) =
            split_host_port(&advertised).with_context(|| format!("listener {}", l.name))?;
        if is_wildcard(&host) {
            bail!("listener {}: the advertised address {advertised} is a wildcard: set advertised = \"HOST:PORT\"", l.name);
        }
        if out.iter().any(|o| o.listener.name == l.name) {
            bail!("two listeners are named {}", l.name);
        }
        let tls = match (l.security.tls(), l.cert, l.key) {
            (true, Some(cert), Some(key)) => Some(crate::auth::tls::TlsFiles {
                cert,
                key,
                client_ca: l.client_ca,
                client_auth: l.client_auth,
            }),
            (true, ..) => bail!(
                "listener {}: {:?} needs cert and key (PEM files)",
                l.name,
                l.security
            ),
            (false, None, None) if l.client_ca.is_none() => None,
            (false, ..) => bail!(
                "listener {}: cert, key and client_ca apply only to SSL and SASL_SSL listeners",
                l.name
            ),
        };
        out.push(ListenerSettings {
            address: l.address,
            listener: Listener {
                name: l.name,
                security: l.security,
                advertised_host: host,
                advertised_port: port,
            },
            tls,
        });
    }
    Ok(out)
}

/// Every segment keeps three files open and every client a socket, and the soft limit on
/// open files is often 1024 (systemd's default) while the hard one is far higher: the soft
/// limit is raised to the hard one, as Go's runtime does for every program, so a broker with
/// a thousand partitions does not fail with EMFILE where the administrator allowed more.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::info!(
                from = before,
                to = lim.rlim_cur,
                "raised the open-file limit"
            );
        }
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    let s = settings(args)?;
    // The allocator was tuned for a broker's buffers before anything started
    // (`alloc::tune_system_allocator`, from main).
    raise_open_file_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let data_dir = s.broker.data_dir.clone();
        let check = Duration::from_millis(s.broker.retention_check_ms);
        let broker = tokio::task::spawn_blocking(move || Broker::open(s.broker))
            .await
            .context("start-up task failed")?
            .with_context(|| format!("cannot open data directory {}", data_dir.display()))?;
        let broker = Arc::new(broker);
        // Every listener is bound (and its certificate loaded) before anything else
        // starts: a mistake in one stops the start with the listener named. The HTTP ones
        // first: once a Kafka port accepts, the admin API does too (the kernel queues its
        // connections until the plugin host is up and serves them), so whoever waits for the
        // Kafka port may call the admin API at once.
        let admin = TcpListener::bind(&s.admin)
            .await
            .with_context(|| format!("cannot serve the admin API on {} (set --admin)", s.admin))?;
        tracing::info!(address = %s.admin, "admin API, web console and /metrics");
        let metrics = match &s.metrics {
            Some(m) => {
                let ml = TcpListener::bind(m)
                    .await
                    .with_context(|| format!("cannot serve metrics on {m}"))?;
                tracing::info!(address = %m, "metrics at /metrics");
                Some(ml)
            }
            None => None,
        };
        let mut bound = Vec::new();
        for l in &s.listeners {
            let name = &l.listener.name;
            let addr: SocketAddr = tokio::net::lookup_host(&l.address)
                .await
                .with_context(|| format!("listener {name}: cannot resolve {}", l.address))?
                .next()
                .with_context(|| format!("listener {name}: no address for {}", l.address))?;
            let tls = match &l.tls {
                Some(files) => Some(Arc::new(
                    crate::auth::tls::Tls::new(files)
                        .with_context(|| format!("listener {name}"))?,
                )),
                None => None,
            };
            let sock = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listener {name}: cannot listen on {addr}"))?;
            bound.push((
                sock,
                crate::server::Endpoint {
                    listener: Arc::new(l.listener.clone()),
                    tls,
                },
            ));
        }
        let host = crate::plugin::PluginHost::new(
            broker.clone(),
            s.plugins_dir.clone(),
            s.deployments_group.clone(),
            s.plugin_threads,
            tokio::runtime::Handle::current(),
        )
        .context("cannot start the plugin host")?;
        let history = crate::console::History::start(broker.clone(), Some(host.clone()));
        tokio::spawn(crate::metrics::serve(
            admin,
            broker.clone(),
            Some(host.clone()),
            Some(history),
            crate::metrics::Access::Admin {
                token: s.admin_token.clone(),
            },
        ));
        if let Some(ml) = metrics {
            tokio::spawn(crate::metrics::serve(
                ml,
                broker.clone(),
                Some(host.clone()),
                None,
                crate::metrics::Access::MetricsOnly,
            ));
        }
        tokio::spawn(host.clone().watch());
        let gb = broker.clone();
        tokio::spawn(async move {
            // The coordinator's clock: session expiry and rebalance deadlines.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                gb.groups.tick(|| gb.topic_info());
                n += 1;
                if n.is_multiple_of(600) {
                    let b = gb.clone();
                    let _ = tokio::task::spawn_blocking(move || b.groups.expire_offsets()).await;
                }
            }
        });
        let tb = broker.clone();
        tokio::spawn(async move {
            // Transactions past their timeout are aborted within a second of it (Kafka checks
            // every 10 s); it writes markers, so off the async workers.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let b = tb.clone();
                let _ = tokio::task::spawn_blocking(move || b.txns.tick(&b)).await;
            }
        });
        let cb = broker.clone();
        tokio::spawn(async move {
            // The log cleaner: one pass over the compacted topics every
            // log_cleaner_backoff_ms (log.cleaner.backoff.ms, changeable while it runs), on
            // a blocking thread.
            loop {
                // Waited a second at a time, the setting read again each time: a value
                // lowered while the cleaner rests applies at once, not after the old pause.
                let rested = std::time::Instant::now();
                loop {
                    let pause = Duration::from_millis(cb.cleaner_backoff_ms());
                    let Some(left) = pause.checked_sub(rested.elapsed()) else {
                        break;
                    };
                    if left.is_zero() {
                        break;
                    }
                    tokio::time::sleep(left.min(Duration::from_secs(1))).await;
                }
                let b = cb.clone();
                let _ = tokio::task::spawn_blocking(move || b.clean_logs()).await;
            }
        });
        let fb = broker.clone();
        tokio::spawn(async move {
            // flush.ms: unsynced records older than it are fsynced in the background.
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                fb.flush_overdue();
            }
        });
        let rb = broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(check);
            loop {
                tick.tick().await;
                let b = rb.clone();
                let _ = tokio::task::spawn_blocking(move || b.apply_retention()).await;
            }
        });
        let mut serving = tokio::task::JoinSet::new();
        for (sock, endpoint) in bound {
            let l = &endpoint.listener;
            tracing::info!(
                listener = %l.name,
                security = ?l.security,
                address = %sock.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                advertised = %format!("{}:{}", l.advertised_host, l.advertised_port),
                "sluice is serving Kafka clients"
            );
            serving.spawn(crate::server::serve(sock, broker.clone(), endpoint));
        }
        // SIGINT (Ctrl-C) or SIGTERM (service managers, docker stop): pipelines stop at a
        // checkpoint. Nothing depends on it: after SIGKILL they resume from the last one.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            r = serving.join_next() => match r {
                Some(Ok(r)) => r.context("listener failed")?,
                _ => bail!("a listener stopped"),
            },
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let h = host.clone();
        let _ = tokio::task::spawn_blocking(move || h.shutdown()).await;
        // After the pipelines' last checkpoints: their outputs are in the logs.
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.close_cleanly()).await;
        Ok(())
    })
}
