//! `sluice quota ...`: client quotas, like `kafka-configs --entity-type users|clients` or
//! `rpk cluster quotas`, over DescribeClientQuotas / AlterClientQuotas (KIP-546).
//!
//! An entity is a user, a client id, or both; each may be a name or the default (Kafka's
//! `<default>`): `--user alice`, `--user-default`, `--client-id app`, `--client-default`.

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::alter_client_quotas_request::{
    EntityData as AlterEntity, EntryData as AlterEntry, OpData,
};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{AlterClientQuotasRequest, DescribeClientQuotasRequest};
use kafka_protocol::protocol::StrBytes;

use super::{kafka_error, print_json, Conn, Output};
use crate::limits::quotas::Key;

#[derive(clap::Subcommand, Debug)]
pub enum QuotaCmd {
    /// Set quotas of an entity: KEY=VALUE ... (producer_byte_rate, consumer_byte_rate,
    /// request_percentage, producer_ids_rate)
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        #[arg(required = true, value_name = "KEY=VALUE")]
        values: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove quotas of an entity: KEY ...
    Delete {
        #[command(flatten)]
        entity: EntityArgs,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List quotas: every entity's, or those matching the entity options (an entity given
    /// as a name matches it exactly, as a default the default)
    List {
        #[command(flatten)]
        entity: EntityArgs,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Args, Debug)]
pub struct EntityArgs {
    /// A user (the principal's name, without User:)
    #[arg(long, conflicts_with = "user_default")]
    user: Option<String>,
    /// The default for users
    #[arg(long)]
    user_default: bool,
    /// A client id
    #[arg(long, conflicts_with = "client_default")]
    client_id: Option<String>,
    /// The default for client ids
    #[arg(long)]
    client_default: bool,
}

impl EntityArgs {
    /// (entity type, name or None for the default), in Kafka's order.
    fn components(&self) -> Vec<(&'static str, Option<String>)> {
        let mut c = Vec::new();
        if self.user.is_some() || self.user_default {
            c.push(("user", self.user.clone()));
        }
        if self.client_id.is_some() || self.client_default {
            c.push(("client-id", self.client_id.clone()));
        }
        c
    }
}

/// An entity as (type, name or None for the default) pairs.
type Components = Vec<(String, Option<String>)>;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn key(name: &str) -> Result<Key> {
    Key::from_name(name).with_context(|| {
            format!("unknown quota '{name}': use producer_byte_rate, consumer_byte_rate, request_percentage or producer_ids_rate")
        })
}

fn describe(c: &[(&str, Option<String>)]) -> String {
    c.iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(cmd: QuotaCmd) -> Result<()> {
    match cmd {
        QuotaCmd::Set {
            entity,
            values,
            conn,
        } => {
            let mut ops = Vec::new();
            for kv in &values {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("'{kv}': write KEY=VALUE"))?;
                key(k)?;
                let v: f64 = v
                    .parse()
                    .with_context(|| format!("'{kv}': the value is not a number"))?;
                ops.push(OpData::default().with_key(sb(k)).with_value(v));
            }
            alter(&conn, &entity, ops).await?;
            println!("quotas of {} set", describe(&entity.components()));
        }
        QuotaCmd::Delete { entity, keys, conn } => {
            let mut ops = Vec::new();
            for k in &keys {
                key(k)?;
                ops.push(OpData::default().with_key(sb(k)).with_remove(true));
            }
            alter(&conn, &entity, ops).await?;
            println!("quotas of {} removed", describe(&entity.components()));
        }
        QuotaCmd::List { entity, out, conn } => {
            let filter: Vec<ComponentData> = entity
                .components()
                .into_iter()
                .map(|(t, name)| {
                    let c = ComponentData::default().with_entity_type(sb(t));
                    match name {
                        Some(n) => c.with_match_type(0).with_match(Some(sb(&n))),
                        None => c.with_match_type(1).with_match(None),
                    }
                })
                .collect();
            let mut c = conn.connect().await?;
            let r = c
                .call(
                    &DescribeClientQuotasRequest::default()
                        .with_components(filter)
                        .with_strict(false),
                    0,
                )
                .await?;
            if r.error_code != 0 {
                bail!("{}", kafka_error(r.error_code, r.error_message.as_deref()));
            }
            let mut rows: Vec<(Components, Vec<(String, f64)>)> = r
                .entries
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    (
                        e.entity
                            .iter()
                            .map(|c| {
                                (
                                    c.entity_type.to_string(),
                                    c.entity_name.as_ref().map(|n| n.to_string()),
                                )
                            })
                            .collect(),
                        e.values
                            .iter()
                            .map(|v| (v.key.to_string(), v.value))
                            .collect(),
                    )
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            if out.json() {
                print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(entity, values)| {
                            serde_json::json!({
                                "entity": entity.iter().map(|(t, n)| (t.clone(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                                "quotas": values.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            println!("{:<40} QUOTAS", "ENTITY");
            for (entity, values) in rows {
                let e: Vec<(&str, Option<String>)> = entity
                    .iter()
                    .map(|(t, n)| (t.as_str(), n.clone()))
                    .collect();
                let v: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("{:<40} {}", describe(&e), v.join(", "));
            }
        }
    }
    Ok(())
}

async fn alter(conn: &Conn, entity: &EntityArgs, ops: Vec<OpData>) -> Result<()> {
    let comps = entity.components();
    if comps.is_empty() {
        bail!("name the entity: --user NAME or --user-default, and/or --client-id ID or --client-default");
    }
    let e = AlterEntry::default()
        .with_entity(
            comps
                .iter()
                .map(|(t, n)| {
                    AlterEntity::default()
                        .with_entity_type(sb(t))
                        .with_entity_name(n.as_deref().map(sb))
                })
                .collect(),
        )
        .with_ops(ops);
    let mut c = conn.connect().await?;
    let r = c
        .call(
            &AlterClientQuotasRequest::default().with_entries(vec![e]),
            0,
        )
        .await?;
    for e in r.entries {
        if e.error_code != 0 {
            bail!("{}", kafka_error(e.error_code, e.error_message.as_deref()));
        }
    }
    Ok(())
}
