//! `sluice acl ...`: ACLs over CreateAcls/DescribeAcls/DeleteAcls, like `kafka-acls.sh`.

use anyhow::{bail, Result};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;

use super::{kafka_error, print_json, Conn, Output};
use crate::auth::acl::{Operation, Resource};

#[derive(clap::Subcommand, Debug)]
pub enum AclCmd {
    /// Allow (or with --deny, deny) principals operations on a resource
    Add {
        #[command(flatten)]
        acl: AclArgs,
        #[command(flatten)]
        conn: Conn,
    },
    /// List ACLs, all or those on one resource / for one principal
    List {
        #[command(flatten)]
        acl: AclArgs,
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove the ACLs that match
    Remove {
        #[command(flatten)]
        acl: AclArgs,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(clap::Args, Debug)]
pub struct AclArgs {
    /// e.g. User:alice, or User:* for everyone
    #[arg(long)]
    principal: Vec<String>,
    /// Client address the ACL applies to (default: any, *)
    #[arg(long)]
    host: Option<String>,
    /// Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs,
    /// AlterConfigs, IdempotentWrite, All
    #[arg(long)]
    operation: Vec<String>,
    /// Deny instead of allow
    #[arg(long)]
    deny: bool,
    #[arg(long)]
    topic: Option<String>,
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    transactional_id: Option<String>,
    #[arg(long)]
    cluster: bool,
    /// The resource name is a prefix (Kafka's --resource-pattern-type prefixed)
    #[arg(long)]
    prefixed: bool,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl AclArgs {
    /// (resource type code, name) of the one resource named, if any.
    fn resource(&self) -> Result<Option<(Resource, String)>> {
        let mut named = Vec::new();
        if let Some(t) = &self.topic {
            named.push((Resource::Topic, t.clone()));
        }
        if let Some(g) = &self.group {
            named.push((Resource::Group, g.clone()));
        }
        if let Some(x) = &self.transactional_id {
            named.push((Resource::TransactionalId, x.clone()));
        }
        if self.cluster {
            named.push((Resource::Cluster, "kafka-cluster".into()));
        }
        if named.len() > 1 {
            bail!("name one resource: --topic, --group, --transactional-id or --cluster");
        }
        Ok(named.pop())
    }

    fn operations(&self) -> Result<Vec<Operation>> {
        self.operation
            .iter()
            .map(|o| {
                Operation::from_name(o).ok_or_else(|| anyhow::anyhow!("unknown operation {o}"))
            })
            .collect()
    }

    fn pattern(&self) -> i8 {
        if self.prefixed {
            4
        } else {
            3
        }
    }

    fn permission(&self) -> i8 {
        if self.deny {
            2
        } else {
            3
        }
    }
}

fn name_of(code: i8, names: &[(i8, &'static str)]) -> String {
    names
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| code.to_string())
}

const RESOURCES: &[(i8, &str)] = &[
    (2, "Topic"),
    (3, "Group"),
    (4, "Cluster"),
    (5, "TransactionalId"),
    (6, "DelegationToken"),
    (7, "User"),
];
const PATTERNS: &[(i8, &str)] = &[(3, "LITERAL"), (4, "PREFIXED")];
const PERMISSIONS: &[(i8, &str)] = &[(2, "DENY"), (3, "ALLOW")];

pub async fn run(cmd: AclCmd) -> Result<()> {
    match cmd {
        AclCmd::Add { acl, conn } => {
            let Some((resource, name)) = acl.resource()? else {
                bail!("name a resource: --topic, --group, --transactional-id or --cluster");
            };
            let ops = acl.operations()?;
            if acl.principal.is_empty() || ops.is_empty() {
                bail!("give at least one --principal and one --operation");
            }
            let mut creations = Vec::new();
            for p in &acl.principal {
                for op in &ops {
                    creations.push(
                        AclCreation::default()
                            .with_resource_type(resource.code())
                            .with_resource_name(sb(&name))
                            .with_resource_pattern_type(acl.pattern())
                            .with_principal(sb(p))
                            .with_host(sb(acl.host.as_deref().unwrap_or("*")))
                            .with_operation(op.code())
                            .with_permission_type(acl.permission()),
                    );
                }
            }
            let n = creations.len();
            let mut c = conn.connect().await?;
            let r = c
                .call(&CreateAclsRequest::default().with_creations(creations), 3)
                .await?;
            for res in &r.results {
                if res.error_code != 0 {
                    bail!(
                        "{}",
                        kafka_error(res.error_code, res.error_message.as_deref())
                    );
                }
            }
            println!("{n} ACL(s) added");
        }
        AclCmd::List { acl, out, conn } => {
            let (rt, name) = match acl.resource()? {
                Some((r, n)) => (r.code(), Some(sb(&n))),
                None => (1, None),
            };
            let op = acl.operations()?.first().map(|o| o.code()).unwrap_or(1);
            let mut c = conn.connect().await?;
            let r = c
                .call(
                    &DescribeAclsRequest::default()
                        .with_resource_type_filter(rt)
                        .with_resource_name_filter(name)
                        // ANY pattern: literal and prefixed alike.
                        .with_pattern_type_filter(1)
                        .with_principal_filter(acl.principal.first().map(|p| sb(p)))
                        .with_host_filter(acl.host.as_deref().map(sb))
                        .with_operation(op)
                        .with_permission_type(1),
                    3,
                )
                .await?;
            if r.error_code != 0 {
                bail!("{}", kafka_error(r.error_code, r.error_message.as_deref()));
            }
            // (resource, name, pattern, principal, host, operation, permission)
            let rows: Vec<[String; 7]> = r
                .resources
                .iter()
                .flat_map(|res| {
                    res.acls.iter().map(move |a| {
                        [
                            name_of(res.resource_type, RESOURCES).to_string(),
                            res.resource_name.to_string(),
                            name_of(res.pattern_type, PATTERNS).to_string(),
                            a.principal.to_string(),
                            a.host.to_string(),
                            Operation::from_code(a.operation)
                                .map(|o| format!("{o:?}"))
                                .unwrap_or_else(|| a.operation.to_string()),
                            name_of(a.permission_type, PERMISSIONS).to_string(),
                        ]
                    })
                })
                .collect();
            if out.json() {
                let keys = [
                    "resource",
                    "name",
                    "pattern",
                    "principal",
                    "host",
                    "operation",
                    "permission",
                ];
                print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|row| {
                            serde_json::Value::Object(
                                keys.iter()
                                    .zip(row)
                                    .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
                                    .collect(),
                            )
                        })
                        .collect(),
                ));
                return Ok(());
            }
            println!(
                "{:<16} {:<24} {:<9} {:<24} {:<10} {:<16} PERMISSION",
                "RESOURCE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION"
            );
            for [rt, n, pat, who, host, op, perm] in rows {
                println!("{rt:<16} {n:<24} {pat:<9} {who:<24} {host:<10} {op:<16} {perm}");
            }
        }
        AclCmd::Remove { acl, conn } => {
            let (rt, name, pattern) = match acl.resource()? {
                Some((r, n)) => (r.code(), Some(sb(&n)), acl.pattern()),
                None => (1, None, 1),
            };
            let ops = acl.operations()?;
            let ops: Vec<i8> = if ops.is_empty() {
                vec![1]
            } else {
                ops.iter().map(|o| o.code()).collect()
            };
            let principals: Vec<Option<StrBytes>> = if acl.principal.is_empty() {
                vec![None]
            } else {
                acl.principal.iter().map(|p| Some(sb(p))).collect()
            };
            let mut filters = Vec::new();
            for p in &principals {
                for op in &ops {
                    filters.push(
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(rt)
                            .with_resource_name_filter(name.clone())
                            .with_pattern_type_filter(pattern)
                            .with_principal_filter(p.clone())
                            .with_host_filter(acl.host.as_deref().map(sb))
                            .with_operation(*op)
                            .with_permission_type(if acl.deny { 2 } else { 1 }),
                    );
                }
            }
            let mut c = conn.connect().await?;
            let r = c
                .call(&DeleteAclsRequest::default().with_filters(filters), 3)
                .await?;
            let mut removed = 0;
            for f in &r.filter_results {
                if f.error_code != 0 {
                    bail!("{}", kafka_error(f.error_code, f.error_message.as_deref()));
                }
                removed += f.matching_acls.len();
            }
            println!("{removed} ACL(s) removed");
        }
    }
    Ok(())
}
