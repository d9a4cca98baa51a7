//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics, a read-only view of
//! the broker's own settings and of group settings, and the broker's log levels (Kafka's
//! broker loggers, changeable while it runs: see `crate::logging`).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::admin::broker_error_code;
use super::{code, sb, Ctx};
use crate::auth::acl::Operation;
use crate::broker::config::TopicConfig;
use crate::broker::dynamic::{self, InertKind, Level};
use crate::broker::Broker;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// The broker's log levels, named by its node id.
const BROKER_LOGGER: i8 = 8;
/// KIP-848's group configs (Kafka 4.0): per-group overrides of the coordinator's settings.
const GROUP: i8 = 32;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_BROKER_LOGGER: i8 = 6;
const SOURCE_GROUP: i8 = 8;
/// Kafka's ConfigType values.
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

struct Described {
    key: String,
    value: String,
    source: i8,
    long: bool,
    doc: &'static str,
    /// Where the value could come from, in precedence order; `None`: only the entry itself.
    synonyms: Option<Vec<Synonym>>,
}

/// One of a config's synonyms: (name, value, source).
type Synonym = (&'static str, String, i8);

/// The broker-level names of topic configs (Kafka's `log.*` and friends): the broker view
/// shows the defaults every topic inherits under the names Kafka's tools expect there.
const TOPIC_DEFAULTS_AS_BROKER: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.type", "compression.type"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("file.delete.delay.ms", "log.segment.delete.delay.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("preallocate", "log.preallocate"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("segment.ms", "log.roll.ms"),
    ("segment.jitter.ms", "log.roll.jitter.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.zstd.level", "compression.zstd.level"),
    (
        "max.decompressed.message.bytes",
        "max.decompressed.message.bytes",
    ),
    ("local.retention.ms", "log.local.retention.ms"),
    ("local.retention.bytes", "log.local.retention.bytes"),
    ("remote.copy.lag.ms", "log.remote.copy.lag.ms"),
    ("remote.copy.lag.bytes", "log.remote.copy.lag.bytes"),
];

/// Broker names whose built-in default Kafka keeps under another name (in hours, or the flush
/// scheduler's interval), so that at the built-in level they have no synonym of their own.
const DEFAULT_UNDER_ANOTHER_NAME: &[(&str, &str, &str)] = &[
    ("log.retention.ms", "log.retention.hours", "168"),
    ("log.roll.ms", "log.roll.hours", "168"),
    ("log.roll.jitter.ms", "log.roll.jitter.hours", "0"),
    (
        "log.flush.interval.ms",
        "log.flush.scheduler.interval.ms",
        "9223372036854775807",
    ),
];

/// Where a topic key's value comes from when the topic does not set it, as Kafka's
/// DescribeConfigs lists it (ConfigHelper's synonyms): under the broker-level name, this
/// broker's dynamic value, the cluster's dynamic default, the config file's, then the
/// built-in default; everything before the first entry under that exact name is left out
/// (a built-in default kept in hours names no synonym of `log.retention.ms`). Empty for a
/// key with no broker-level name.
fn broker_synonyms(b: &Broker, dynamic: &dynamic::DynamicConfigs, topic_key: &str) -> Vec<Synonym> {
    let Some(&(_, name)) = TOPIC_DEFAULTS_AS_BROKER
        .iter()
        .find(|(t, _)| *t == topic_key)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (level, source) in [
        (&dynamic.broker, SOURCE_DYNAMIC_BROKER),
        (&dynamic.cluster, SOURCE_DYNAMIC_DEFAULT_BROKER),
        (&b.config.defaults.values, SOURCE_STATIC_BROKER),
    ] {
        if let Some(v) = level.get(topic_key) {
            out.push((name, v.clone(), source));
        }
    }
    match DEFAULT_UNDER_ANOTHER_NAME.iter().find(|(n, ..)| *n == name) {
        Some(&(_, other, value)) => out.push((other, value.to_string(), SOURCE_DEFAULT)),
        None => {
            if let Some(v) = crate::broker::config::default_of(topic_key) {
                out.push((name, v.to_string(), SOURCE_DEFAULT));
            }
        }
    }
    let first = out.iter().position(|s| s.0 == name).unwrap_or(out.len());
    out.split_off(first)
}

/// A topic's config as Kafka describes it: the topic's own value first, then
/// [`broker_synonyms`]; the source is the first synonym's.
fn topic_entry(
    b: &Broker,
    dynamic: &dynamic::DynamicConfigs,
    e: crate::broker::config::Entry,
) -> Described {
    let mut synonyms = broker_synonyms(b, dynamic, e.key);
    if !e.is_default {
        synonyms.insert(0, (e.key, e.value.clone(), SOURCE_TOPIC));
    }
    Described {
        key: e.key.to_string(),
        value: e.value,
        source: synonyms.first().map_or(SOURCE_DEFAULT, |s| s.2),
        long: e.is_long,
        doc: e.doc,
        synonyms: Some(synonyms),
    }
}

/// What a group may override (Kafka's GroupConfig), each at the group's own value if it has
/// one (`group/configs.rs`), else the coordinator's.
fn group_configs(b: &Broker, group: &str) -> Vec<Described> {
    use crate::group::configs::{HEARTBEAT_INTERVAL, SESSION_TIMEOUT, SHARE_OFFSET_RESET};
    b.groups.group_config(group, |c| {
        let source = |key| {
            if c.is_set(key) {
                SOURCE_GROUP
            } else {
                SOURCE_DEFAULT
            }
        };
        vec![
            Described {
                key: SESSION_TIMEOUT.into(),
                value: c.session_timeout_ms().to_string(),
                source: source(SESSION_TIMEOUT),
                long: true,
                doc: "How long a KIP-848 member may go without a heartbeat.",
                synonyms: None,
            },
            Described {
                key: HEARTBEAT_INTERVAL.into(),
                value: c.heartbeat_interval_ms().to_string(),
                source: source(HEARTBEAT_INTERVAL),
                long: true,
                doc: "How often KIP-848 members heartbeat.",
                synonyms: None,
            },
            Described {
                key: SHARE_OFFSET_RESET.into(),
                value: if c.share_from_earliest() {
                    "earliest"
                } else {
                    "latest"
                }
                .into(),
                source: source(SHARE_OFFSET_RESET),
                long: false,
                doc: "Where a share group new to a partition starts.",
                synonyms: None,
            },
        ]
    })
}

/// The topic key behind a broker-level name that can change while the broker runs.
fn dynamic_key(broker_key: &str) -> Option<&'static str> {
    TOPIC_DEFAULTS_AS_BROKER
        .iter()
        .find(|(_, b)| *b == broker_key)
        .map(|(t, _)| *t)
}

/// The dynamic level a broker resource name addresses: "" is the cluster-wide default
/// (`--entity-default`), this broker's id is this broker.
fn dynamic_level(b: &Broker, name: &str) -> Result<Level, String> {
    if name.is_empty() {
        Ok(Level::Cluster)
    } else {
        this_broker(b, name).map(|()| Level::Broker)
    }
}

const CLEANER_THREADS: &str = "log.cleaner.threads";

const CLEANER_THREADS_DOC: &str = "Compacted partitions the log cleaner cleans at once (each \
     thread takes its share of the key map and of the I/O limit).";

const CLEANER_BACKOFF_DOC: &str =
    "How long the log cleaner rests between passes over the compacted topics.";

fn broker_configs(b: &Broker, name: &str) -> Vec<Described> {
    let dynamic = b.dynamic_configs();
    let topic_defaults = TopicConfig::default().entries(&b.defaults());
    // Where a key's value comes from; `unset`: the source when no dynamic level sets it.
    let source = |key: &str, unset: i8| match dynamic.source_of(key) {
        Some(Level::Broker) => SOURCE_DYNAMIC_BROKER,
        Some(Level::Cluster) => SOURCE_DYNAMIC_DEFAULT_BROKER,
        None => unset,
    };
    let inert = |key: &'static str, value: String, source: i8, kind| Described {
        key: key.into(),
        value,
        source,
        long: kind == InertKind::Long,
        doc: "Kafka's setting for GSSAPI (Kerberos), which sluice does not offer: kept and \
              reported, no effect.",
        synonyms: None,
    };
    if name.is_empty() {
        // Kafka's answer for the cluster default: only what is set there.
        let mut out: Vec<Described> = TOPIC_DEFAULTS_AS_BROKER
            .iter()
            .filter_map(|&(topic_key, broker_key)| {
                let value = dynamic.cluster.get(topic_key)?;
                let e = topic_defaults.iter().find(|e| e.key == topic_key)?;
                Some(Described {
                    key: broker_key.into(),
                    value: value.clone(),
                    source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                    long: e.is_long,
                    doc: e.doc,
                    synonyms: None,
                })
            })
            .collect();
        for &(key, _, kind) in dynamic::INERT {
            if let Some(v) = dynamic.cluster.get(key) {
                out.push(inert(key, v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER, kind));
            }
        }
        for &(key, _) in dynamic::BROKER_OWN {
            if let Some(v) = dynamic.cluster.get(key) {
                out.push(Described {
                    key: key.into(),
                    value: v.clone(),
                    source: SOURCE_DYNAMIC_DEFAULT_BROKER,
                    long: true,
                    doc: if key == CLEANER_THREADS {
                        CLEANER_THREADS_DOC
                    } else {
                        CLEANER_BACKOFF_DOC
                    },
                    synonyms: None,
                });
            }
        }
        return out;
    }
    let mut out = broker_settings(b, &dynamic);
    for &(key, _, kind) in dynamic::INERT {
        let value = dynamic.inert_value(key).unwrap_or_default();
        out.push(inert(key, value, source(key, SOURCE_DEFAULT), kind));
    }
    for &(topic_key, broker_key) in TOPIC_DEFAULTS_AS_BROKER {
        if let Some(e) = topic_defaults.iter().find(|e| e.key == topic_key) {
            let synonyms = broker_synonyms(b, &dynamic, topic_key);
            out.push(Described {
                key: broker_key.into(),
                value: e.value.clone(),
                source: synonyms.first().map_or(SOURCE_DEFAULT, |s| s.2),
                long: e.is_long,
                doc: e.doc,
                synonyms: Some(synonyms),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// A setting of the broker's own as Kafka describes it: its synonyms are its dynamic values
/// (this broker's, then the cluster default; for the settings that change while it runs),
/// the config file's, then the built-in default, and its value and source are the first's.
/// sluice keeps the file's values, not which keys the file named: a file value equal to the
/// built-in default shows as the default (Kafka would list both).
fn own_setting(
    dynamic: &dynamic::DynamicConfigs,
    key: &'static str,
    file: String,
    builtin: &str,
    doc: &'static str,
) -> Described {
    let mut synonyms: Vec<Synonym> = Vec::new();
    if dynamic::broker_own(key).is_some() {
        if let Some(v) = dynamic.broker.get(key) {
            synonyms.push((key, v.clone(), SOURCE_DYNAMIC_BROKER));
        }
        if let Some(v) = dynamic.cluster.get(key) {
            synonyms.push((key, v.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER));
        }
    }
    if file != builtin {
        synonyms.push((key, file, SOURCE_STATIC_BROKER));
    }
    synonyms.push((key, builtin.to_string(), SOURCE_DEFAULT));
    Described {
        key: key.into(),
        value: synonyms[0].1.clone(),
        source: synonyms[0].2,
        long: true,
        doc,
        synonyms: Some(synonyms),
    }
}

fn broker_settings(b: &Broker, dynamic: &dynamic::DynamicConfigs) -> Vec<Described> {
    let c = &b.config;
    let g = &c.groups;
    let d = crate::group::state::GroupConfig::default();
    let own =
        |key, file: String, builtin: String, doc| own_setting(dynamic, key, file, &builtin, doc);
    let mut out = vec![
        own(
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            "true".into(),
            "Create topics on first use.",
        ),
        own(
            "num.partitions",
            c.default_partitions.to_string(),
            "1".into(),
            "Partitions of an auto-created topic.",
        ),
        // Tools read it to create topics "with the broker's default" (kafkajs' admin tests,
        // `kafka-topics` without --replication-factor): one node, one replica.
        own(
            "default.replication.factor",
            "1".into(),
            "1".into(),
            "Replicas of a topic created without a replication factor.",
        ),
        // Kafka's built-in -1: no id of its own until the file gives one.
        own(
            "broker.id",
            c.node_id.to_string(),
            "-1".into(),
            "This broker's node id.",
        ),
        own(
            "log.cleaner.backoff.ms",
            c.cleaner_backoff_ms.to_string(),
            crate::broker::DEFAULT_CLEANER_BACKOFF_MS.to_string(),
            CLEANER_BACKOFF_DOC,
        ),
        own(
            CLEANER_THREADS,
            c.cleaner_threads.to_string(),
            crate::broker::DEFAULT_CLEANER_THREADS.to_string(),
            CLEANER_THREADS_DOC,
        ),
        own(
            "log.cleaner.dedupe.buffer.size",
            c.cleaner_dedupe_buffer_bytes.to_string(),
            crate::broker::DEFAULT_CLEANER_DEDUPE_BYTES.to_string(),
            "Memory of the log cleaner's key map (about 48 bytes per key), shared by its threads.",
        ),
    ];
    for (key, value, builtin, doc) in [
        (
            "group.consumer.session.timeout.ms",
            g.consumer_session_timeout_ms,
            d.consumer_session_timeout_ms,
            "KIP-848 groups: how long a member may go without a heartbeat.",
        ),
        (
            "group.consumer.heartbeat.interval.ms",
            g.consumer_heartbeat_interval_ms.into(),
            d.consumer_heartbeat_interval_ms.into(),
            "KIP-848 groups: how often members heartbeat.",
        ),
        (
            "group.min.session.timeout.ms",
            g.min_session_timeout_ms.into(),
            d.min_session_timeout_ms.into(),
            "Classic groups: the shortest session timeout a member may ask for.",
        ),
        (
            "group.max.session.timeout.ms",
            g.max_session_timeout_ms.into(),
            d.max_session_timeout_ms.into(),
            "Classic groups: the longest session timeout a member may ask for.",
        ),
        (
            "group.initial.rebalance.delay.ms",
            g.initial_rebalance_delay_ms,
            d.initial_rebalance_delay_ms,
            "Classic groups: how long a first rebalance waits for more members.",
        ),
    ] {
        let (value, builtin): (i64, i64) = (value, builtin);
        out.push(own(key, value.to_string(), builtin.to_string(), doc));
    }
    out
}

/// Whether Kafka 4.4 describes this broker setting as null (and without synonyms): one set
/// nowhere whose default Kafka keeps under another name (`log.roll.ms` goes by
/// `log.roll.hours`), or whose default is null (Kerberos' service name). The value sluice
/// goes by is the same; only the answer is as Kafka gives it.
fn kafka_says_null(e: &Described) -> bool {
    match &e.synonyms {
        Some(s) => s.is_empty() && DEFAULT_UNDER_ANOTHER_NAME.iter().any(|(n, ..)| *n == e.key),
        None => {
            e.value.is_empty() && e.source == SOURCE_DEFAULT && dynamic::inert(&e.key).is_some()
        }
    }
}

/// Topic configs take (DESCRIBE|ALTER)_CONFIGS on the topic, broker configs on the cluster.
fn config_denied(
    ctx: &Ctx<'_>,
    resource_type: i8,
    name: &str,
    op: Operation,
) -> Option<ResponseError> {
    match resource_type {
        TOPIC if !ctx.may(op, name) => Some(ResponseError::TopicAuthorizationFailed),
        BROKER | BROKER_LOGGER if !ctx.may_cluster(op) => {
            Some(ResponseError::ClusterAuthorizationFailed)
        }
        GROUP if !ctx.allowed(op, crate::auth::acl::Resource::Group, name) => {
            Some(ResponseError::GroupAuthorizationFailed)
        }
        _ => None,
    }
}

pub fn describe(ctx: &Ctx<'_>, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let b = ctx.broker;
    let mut resp = DescribeConfigsResponse::default();
    for res in req.resources {
        let mut r = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Some(e) = config_denied(
            ctx,
            res.resource_type,
            res.resource_name.as_str(),
            Operation::DescribeConfigs,
        ) {
            r.error_code = code(e);
            r.error_message = Some(sb("Authorization failed."));
            resp.results.push(r);
            continue;
        }
        let entries = match res.resource_type {
            TOPIC => match b.topic(res.resource_name.as_str()) {
                Some(t) => {
                    let dynamic = b.dynamic_configs();
                    t.config()
                        .entries(&b.defaults())
                        .into_iter()
                        .map(|e| topic_entry(b, &dynamic, e))
                        .collect()
                }
                None => {
                    r.error_code = code(ResponseError::UnknownTopicOrPartition);
                    r.error_message = Some(sb(format!(
                        "topic '{}' does not exist",
                        res.resource_name.as_str()
                    )));
                    resp.results.push(r);
                    continue;
                }
            },
            BROKER => match res.resource_name.as_str() {
                "" => broker_configs(b, ""),
                name => match this_broker(b, name) {
                    Ok(()) => broker_configs(b, name),
                    Err(msg) => {
                        r.error_code = code(ResponseError::InvalidRequest);
                        r.error_message = Some(sb(msg));
                        resp.results.push(r);
                        continue;
                    }
                },
            },
            GROUP => group_configs(b, res.resource_name.as_str()),
            BROKER_LOGGER => match this_broker(b, res.resource_name.as_str()) {
                Ok(()) => crate::logging::loggers()
                    .into_iter()
                    .map(|(name, level)| Described {
                        key: name,
                        value: level.kafka_name().into(),
                        source: SOURCE_BROKER_LOGGER,
                        long: false,
                        doc: "A logger (a tracing target, or root for every other) and its level.",
                        synonyms: None,
                    })
                    .collect(),
                Err(msg) => {
                    r.error_code = code(ResponseError::InvalidRequest);
                    r.error_message = Some(sb(msg));
                    resp.results.push(r);
                    continue;
                }
            },
            other => {
                r.error_code = code(ResponseError::InvalidRequest);
                r.error_message = Some(sb(format!("unsupported resource type {other}")));
                resp.results.push(r);
                continue;
            }
        };
        r.configs = entries
            .into_iter()
            .filter(|e| {
                res.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == e.key))
            })
            .map(|e| {
                let null = res.resource_type == BROKER && kafka_says_null(&e);
                let mut c = DescribeConfigsResourceResult::default()
                    .with_name(sb(e.key.clone()))
                    .with_value((!null).then(|| sb(e.value.clone())))
                    .with_read_only(match res.resource_type {
                        TOPIC | BROKER_LOGGER | GROUP => false,
                        BROKER => {
                            dynamic_key(&e.key).is_none()
                                && dynamic::inert(&e.key).is_none()
                                && dynamic::broker_own(&e.key).is_none()
                        }
                        _ => true,
                    })
                    .with_config_source(e.source);
                if req.include_synonyms && !null {
                    c.synonyms = match &e.synonyms {
                        Some(list) => list
                            .iter()
                            .map(|(name, value, source)| {
                                DescribeConfigsSynonym::default()
                                    .with_name(sb(*name))
                                    .with_value(Some(sb(value.clone())))
                                    .with_source(*source)
                            })
                            .collect(),
                        None => vec![DescribeConfigsSynonym::default()
                            .with_name(sb(e.key.clone()))
                            .with_value(Some(sb(e.value.clone())))
                            .with_source(e.source)],
                    };
                }
                if ctx.version >= 3 {
                    c.config_type = if e.long { TYPE_LONG } else { TYPE_STRING };
                    if req.include_documentation {
                        c.documentation = Some(sb(e.doc));
                    }
                }
                c
            })
            .collect();
        resp.results.push(r);
    }
    resp
}

/// Applies `change` to a topic's config, or only checks it with `validate_only`.
fn apply(
    ctx: &Ctx<'_>,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    change: impl FnOnce(TopicConfig) -> Result<TopicConfig, String>,
) -> Result<(), (ResponseError, String)> {
    let b = ctx.broker;
    if let Some(e) = config_denied(ctx, resource_type, name, Operation::AlterConfigs) {
        return Err((e, "Authorization failed.".into()));
    }
    if resource_type != TOPIC {
        // As Kafka: the old AlterConfigs alters topics and brokers only.
        return Err((
            ResponseError::InvalidRequest,
            format!(
                "AlterConfigs alters topic and broker configs; resource type {resource_type} \
                 takes IncrementalAlterConfigs"
            ),
        ));
    }
    let topic = b.topic(name).ok_or_else(|| {
        (
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )
    })?;
    let next = change(topic.config()).map_err(|m| (ResponseError::InvalidConfig, m))?;
    if validate_only {
        return Ok(());
    }
    b.set_topic_config(name, next)
        .map_err(|e| (broker_error_code(&e), e.to_string()))
}

pub fn alter(ctx: &Ctx<'_>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in req.resources {
        // Non-incremental: the given set replaces every override (for a broker, that
        // level's dynamic configs).
        let result = if res.resource_type == BROKER {
            let changes = res.configs.iter().map(|kv| match &kv.value {
                Some(v) => (kv.name.as_str(), Change::Set(v.as_str())),
                None => (kv.name.as_str(), Change::Delete),
            });
            alter_broker(
                ctx,
                res.resource_name.as_str(),
                true,
                changes,
                req.validate_only,
            )
        } else {
            apply(
                ctx,
                res.resource_type,
                res.resource_name.as_str(),
                req.validate_only,
                |_| {
                    let mut c = TopicConfig::default();
                    for kv in &res.configs {
                        match &kv.value {
                            Some(v) => c
                                .set(kv.name.as_str(), v.as_str())
                                .map_err(|e| e.to_string())?,
                            None => c.delete(kv.name.as_str()).map_err(|e| e.to_string())?,
                        }
                    }
                    Ok(c)
                },
            )
        };
        let mut r = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        if let Err((e, msg)) = result {
            r.error_code = code(e);
            r.error_message = Some(sb(msg));
        }
        resp.responses.push(r);
    }
    resp
}

pub fn incremental_alter(
    ctx: &Ctx<'_>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in req.resources {
        let result = match res.resource_type {
            BROKER => incremental_broker(ctx, &res, req.validate_only),
            BROKER_LOGGER => alter_loggers(ctx, &res, req.validate_only),
            GROUP => incremental_group(ctx, &res, req.validate_only),
            _ => incremental_topic(ctx, &res, req.validate_only),
        };
        let mut r = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name);
        if let Err((e, msg)) = result {
            r.error_code = code(e);
            r.error_message = Some(sb(msg));
        }
        resp.responses.push(r);
    }
    resp
}

type IncrementalResource =
    kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;

/// SET and DELETE of dynamic broker configs.
fn incremental_broker(
    ctx: &Ctx<'_>,
    res: &IncrementalResource,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let mut changes = Vec::with_capacity(res.configs.len());
    for kv in &res.configs {
        let key = kv.name.as_str();
        let change = match (kv.config_operation, &kv.value) {
            (0, Some(v)) => Change::Set(v.as_str()),
            (1, _) => Change::Delete,
            (2, Some(v)) => Change::Append(v.as_str()),
            (3, Some(v)) => Change::Subtract(v.as_str()),
            (0 | 2 | 3, None) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("SET, APPEND and SUBTRACT of broker config '{key}' need a value"),
                ))
            }
            (op, _) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("unknown operation {op} on broker config '{key}'"),
                ))
            }
        };
        changes.push((key, change));
    }
    alter_broker(
        ctx,
        res.resource_name.as_str(),
        false,
        changes.into_iter(),
        validate_only,
    )
}

/// SET, DELETE, APPEND and SUBTRACT of a topic's configs.
fn incremental_topic(
    ctx: &Ctx<'_>,
    res: &IncrementalResource,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    apply(
        ctx,
        res.resource_type,
        res.resource_name.as_str(),
        validate_only,
        |mut c| {
            for kv in &res.configs {
                let key = kv.name.as_str();
                match (kv.config_operation, &kv.value) {
                    (0, Some(v)) => c.set(key, v.as_str()).map_err(|e| e.to_string())?,
                    (0, None) => return Err(format!("SET of '{key}' needs a value")),
                    (1, _) => c.delete(key).map_err(|e| e.to_string())?,
                    // APPEND (2) and SUBTRACT (3) apply to list configs: here only
                    // cleanup.policy.
                    (op @ (2 | 3), Some(v)) if LIST_KEYS.contains(&key) => {
                        let current = c.get(&ctx.broker.defaults(), key);
                        c.set(key, &edit_list(&current, op == 2, v))
                            .map_err(|e| e.to_string())?
                    }
                    (op, _) => {
                        return Err(format!(
                            "operation {op} (APPEND/SUBTRACT) applies to list configs; '{key}' is not one"
                        ))
                    }
                }
            }
            Ok(c)
        },
    )
}

/// SET and DELETE of a group's configs; the group need not exist (as in Kafka).
fn incremental_group(
    ctx: &Ctx<'_>,
    res: &IncrementalResource,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let group = res.resource_name.as_str();
    if let Some(e) = config_denied(ctx, GROUP, group, Operation::AlterConfigs) {
        return Err((e, "Authorization failed.".into()));
    }
    let changes = sets_and_deletes(res, "group config", ResponseError::InvalidConfig)?;
    ctx.broker
        .groups
        .alter_group_config(group, &changes, validate_only)
        .map_err(|e| match e {
            crate::group::configs::AlterError::Invalid(
                crate::group::configs::GroupConfigError::NoGroup,
            ) => (ResponseError::InvalidRequest, e.to_string()),
            crate::group::configs::AlterError::Invalid(_) => {
                (ResponseError::InvalidConfig, e.to_string())
            }
            crate::group::configs::AlterError::Store(_) => {
                (ResponseError::KafkaStorageError, e.to_string())
            }
        })
}

/// A config's name and Some(value) to set, or None to remove it.
type KeyChange<'a> = (&'a str, Option<&'a str>);

/// A resource's changes where only SET (with a value) and DELETE apply: (key, Some(value) to
/// set or None to remove). `list_op` is the error for APPEND and SUBTRACT.
fn sets_and_deletes<'a>(
    res: &'a IncrementalResource,
    what: &str,
    list_op: ResponseError,
) -> Result<Vec<KeyChange<'a>>, (ResponseError, String)> {
    res.configs
        .iter()
        .map(|kv| {
            let key = kv.name.as_str();
            match (kv.config_operation, &kv.value) {
                (0, Some(v)) => Ok((key, Some(v.as_str()))),
                (0, None) => Err((
                    ResponseError::InvalidConfig,
                    format!("SET of {what} '{key}' needs a value"),
                )),
                (1, _) => Ok((key, None)),
                (op, _) => Err((
                    list_op,
                    format!("operation {op} (APPEND/SUBTRACT) does not apply to {what} '{key}'"),
                )),
            }
        })
        .collect()
}

/// A broker or broker-logger resource names this broker by its node id, as in Kafka.
fn this_broker(b: &Broker, name: &str) -> Result<(), String> {
    if name.trim().parse::<i32>().ok() == Some(b.config.node_id) {
        Ok(())
    } else {
        Err(format!(
            "unexpected broker id: this broker is {}, the request names '{name}'",
            b.config.node_id
        ))
    }
}

/// SET and DELETE of log levels; all of a resource's changes apply, or none.
fn alter_loggers(
    ctx: &Ctx<'_>,
    res: &IncrementalResource,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let name = res.resource_name.as_str();
    if let Some(e) = config_denied(ctx, BROKER_LOGGER, name, Operation::AlterConfigs) {
        return Err((e, "Authorization failed.".into()));
    }
    this_broker(ctx.broker, name).map_err(|m| (ResponseError::InvalidRequest, m))?;
    let changes = sets_and_deletes(res, "logger", ResponseError::InvalidRequest)?;
    crate::logging::change(&changes, validate_only).map_err(|e| {
        let code = match e {
            crate::logging::LoggingError::RemoveRoot => ResponseError::InvalidRequest,
            _ => ResponseError::InvalidConfig,
        };
        (code, e.to_string())
    })
}

/// One change to a config, as IncrementalAlterConfigs names them.
#[derive(Clone, Copy, Debug)]
enum Change<'a> {
    Set(&'a str),
    Delete,
    /// Add items to a list config (those it has already are kept once).
    Append(&'a str),
    /// Take items out of a list config.
    Subtract(&'a str),
}

/// The configs whose values are comma-separated lists (Kafka's LIST type), the only ones
/// APPEND and SUBTRACT apply to; topic keys.
const LIST_KEYS: &[&str] = &["cleanup.policy"];

/// `current`, a comma-separated list, with the items of `items` appended (once) or removed.
fn edit_list(current: &str, append: bool, items: &str) -> String {
    let mut list: Vec<&str> = current
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if !append {
            list.retain(|i| *i != item);
        } else if !list.contains(&item) {
            list.push(item);
        }
    }
    list.join(",")
}

/// Dynamic broker configs: `changes` are (broker-level name, change) at the level `name`
/// addresses; with `replace` the level is emptied first (AlterConfigs). All apply or none.
fn alter_broker<'a>(
    ctx: &Ctx<'_>,
    name: &str,
    replace: bool,
    changes: impl Iterator<Item = (&'a str, Change<'a>)>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let b = ctx.broker;
    if let Some(e) = config_denied(ctx, BROKER, name, Operation::AlterConfigs) {
        return Err((e, "Authorization failed.".into()));
    }
    let level = dynamic_level(b, name).map_err(|m| (ResponseError::InvalidRequest, m))?;
    let mut mapped = Vec::new();
    let mut inert_set = Vec::new();
    for (key, value) in changes {
        let own = dynamic::broker_own(key).map(|&(k, _)| k);
        let topic_key = dynamic_key(key).or(own).or_else(|| {
            let &(name, ..) = dynamic::inert(key)?;
            if matches!(value, Change::Set(_)) {
                inert_set.push(name);
            }
            Some(name)
        });
        let Some(topic_key) = topic_key else {
            return Err((
                ResponseError::InvalidRequest,
                format!(
                    "'{key}' cannot be changed while the broker runs (set it in the config \
                     file); dynamic: {}",
                    TOPIC_DEFAULTS_AS_BROKER
                        .iter()
                        .map(|(_, b)| *b)
                        .chain(dynamic::BROKER_OWN.iter().map(|(k, _)| *k))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if matches!(value, Change::Append(_) | Change::Subtract(_))
            && !LIST_KEYS.contains(&topic_key)
        {
            return Err((
                ResponseError::InvalidConfig,
                format!("APPEND and SUBTRACT apply to list configs; '{key}' is not one"),
            ));
        }
        mapped.push((topic_key, value));
    }
    let file = &b.config.defaults;
    b.alter_dynamic_configs(validate_only, |d| {
        if replace {
            d.level_mut(level).clear();
        }
        for (key, value) in mapped {
            match value {
                Change::Set(v) => d.set(level, key, v)?,
                Change::Delete => d.delete(level, key),
                Change::Append(items) | Change::Subtract(items) => {
                    let current = d.current(level, key, file);
                    let append = matches!(value, Change::Append(_));
                    d.set(level, key, &edit_list(&current, append, items))?
                }
            }
        }
        Ok(())
    })
    .map_err(|e| (broker_error_code(&e), e.to_string()))?;
    if !validate_only && !inert_set.is_empty() {
        tracing::warn!(configs = ?inert_set, "Kafka's Kerberos settings set: sluice offers no GSSAPI, so they are kept and reported but change nothing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerConfig;

    fn names(list: &[Synonym]) -> Vec<(&str, &str, i8)> {
        list.iter().map(|(n, v, s)| (*n, v.as_str(), *s)).collect()
    }

    /// The chains Kafka 4.4 describes for the same settings (checked against it with
    /// kafka-configs --describe --all; tests/clients/kafka_tools.sh keeps checking a few).
    #[test]
    fn synonyms_follow_kafkas_precedence_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::with_defaults(dir.path().to_path_buf());
        config
            .defaults
            .values
            .insert("segment.bytes".into(), "4000000".into());
        let b = Broker::open(config).unwrap();
        b.alter_dynamic_configs(false, |d| {
            d.set(Level::Cluster, "retention.ms", "86400000")?;
            d.set(Level::Cluster, "segment.bytes", "3000000")?;
            d.set(Level::Broker, "segment.bytes", "2000000")
        })
        .unwrap();
        let d = b.dynamic_configs();
        let chain = |k| broker_synonyms(&b, &d, k);
        assert_eq!(
            names(&chain("segment.bytes")),
            [
                ("log.segment.bytes", "2000000", SOURCE_DYNAMIC_BROKER),
                (
                    "log.segment.bytes",
                    "3000000",
                    SOURCE_DYNAMIC_DEFAULT_BROKER
                ),
                ("log.segment.bytes", "4000000", SOURCE_STATIC_BROKER),
                ("log.segment.bytes", "1073741824", SOURCE_DEFAULT),
            ]
        );
        // Kafka keeps these built-in defaults in hours: set nowhere, they have no synonym.
        assert_eq!(
            names(&chain("retention.ms")),
            [
                (
                    "log.retention.ms",
                    "86400000",
                    SOURCE_DYNAMIC_DEFAULT_BROKER
                ),
                ("log.retention.hours", "168", SOURCE_DEFAULT),
            ]
        );
        assert!(chain("segment.ms").is_empty());
        assert_eq!(
            names(&chain("max.message.bytes")),
            [("message.max.bytes", "1048588", SOURCE_DEFAULT)]
        );
        assert!(chain("remote.storage.enable").is_empty());
        // A topic's own value comes first and is the source.
        let t = crate::broker::config::TopicConfig::from_pairs([("segment.ms", "1000")]).unwrap();
        let entry = |k: &str| {
            let e = t.entries(&b.defaults()).into_iter().find(|e| e.key == k);
            topic_entry(&b, &d, e.unwrap())
        };
        let seg = entry("segment.ms");
        assert_eq!(seg.source, SOURCE_TOPIC);
        assert_eq!(
            names(seg.synonyms.as_deref().unwrap()),
            [("segment.ms", "1000", SOURCE_TOPIC)]
        );
        assert_eq!(entry("segment.bytes").source, SOURCE_DYNAMIC_BROKER);
        assert_eq!(entry("segment.jitter.ms").source, SOURCE_DEFAULT);
    }
}
