//! ACLs end to end: a broker with `authorizer = "acl"` and a SASL listener. A table of Kafka
//! APIs, each sent by a principal with no ACLs (it must be refused with Kafka's error code),
//! then again after `sluice acl add` grants the one operation Kafka requires (it must pass);
//! Kafka's own `kafka-acls` tool against the broker; and listings that hide what the caller
//! may not describe.
//!
//! Registered in runtime/Cargo.toml as `[[test]] name = "acls" path = "../tests/acls.rs"`.

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice::auth::sasl::Mech;
use sluice::auth::scram::Mechanism;
use sluice::client::{Client, ClientError, SaslLogin, Security};
use support::{free_port, require_java_clients, Broker, Script};

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn sluice_ok(args: &[&str]) -> String {
    let out = support::command(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice");
    assert!(
        out.status.success(),
        "sluice {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Setup {
    broker: Broker,
    sasl: String,
}

fn start() -> Setup {
    let port = free_port();
    let toml = format!(
        r#"
authorizer = "acl"
super_users = ["User:admin"]
default_partitions = 1
[[listeners]]
name = "SASL"
address = "127.0.0.1:{port}"
security = "SASL_PLAINTEXT"
"#
    );
    let broker = Broker::start_prepared(&toml, |data| {
        let d = data.to_str().unwrap();
        for (u, p) in [("admin", "adminpw"), ("alice", "alicepw"), ("bob", "bobpw")] {
            sluice_ok(&["user", "create", u, "--password", p, "--data-dir", d]);
        }
    });
    Setup {
        broker,
        sasl: format!("127.0.0.1:{port}"),
    }
}

impl Setup {
    fn as_admin(&self) -> Vec<String> {
        [
            "--bootstrap",
            &self.sasl,
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-username",
            "admin",
            "--sasl-password",
            "adminpw",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn admin_cli(&self, args: &[&str]) -> String {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(self.as_admin());
        sluice_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    async fn client(&self, user: &str, password: &str) -> Client {
        self.login(user, password).await.expect("connect")
    }

    /// A SCRAM-SHA-256 login on the SASL listener.
    async fn login(&self, user: &str, password: &str) -> Result<Client, ClientError> {
        Client::connect_secured(
            &self.sasl,
            &Security {
                tls: None,
                sasl: Some(SaslLogin {
                    mechanism: Mech::Scram(Mechanism::Sha256),
                    username: user.into(),
                    password: password.into(),
                }),
            },
        )
        .await
    }
}

type Call = for<'a> fn(&'a mut Client, &'a str) -> Pin<Box<dyn Future<Output = i16> + 'a>>;

macro_rules! call {
    (|$c:ident, $n:ident| $body:expr) => {{
        fn f<'a>($c: &'a mut Client, $n: &'a str) -> Pin<Box<dyn Future<Output = i16> + 'a>> {
            Box::pin(async move { $body })
        }
        f as Call
    }};
}

const TOPIC_AUTH: i16 = 29;
const GROUP_AUTH: i16 = 30;
const CLUSTER_AUTH: i16 = 31;
const TXN_AUTH: i16 = 53;

fn topic(n: &str) -> TopicName {
    TopicName(sb(n))
}

fn one_record() -> bytes::Bytes {
    let rec = sluice::records::Record {
        value: Some(bytes::Bytes::from_static(b"v")),
        ..Default::default()
    };
    sluice::records::encode_batch(&[rec], sluice::records::Compression::None).expect("batch")
}

/// A connection of the super user.
async fn as_admin(addr: &str) -> Client {
    let admin = Security {
        tls: None,
        sasl: Some(SaslLogin {
            mechanism: Mech::Scram(Mechanism::Sha256),
            username: "admin".into(),
            password: "adminpw".into(),
        }),
    };
    Client::connect_secured(addr, &admin).await.unwrap()
}

/// Grants alice `operation` (Kafka's code: 3 READ, 4 WRITE) on a resource (2 topic, 3
/// group), as the super user: for the cases whose API needs a second ACL besides the one
/// under test, so that only that one decides.
async fn admin_grants_alice(addr: &str, resource_type: i8, name: &str, operation: i8) {
    let mut a = as_admin(addr).await;
    let r = a
        .call(
            &CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(sb(name))
                    .with_resource_pattern_type(3)
                    .with_principal(sb("User:alice"))
                    .with_host(sb("*"))
                    .with_operation(operation)
                    .with_permission_type(3),
            ]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        r.results[0].error_code, 0,
        "granting alice {operation} on {name}"
    );
}

/// An idempotent producer id to name in transactional requests: refused or not by the ACLs
/// before the coordinator looks it up.
const SOME_PRODUCER: i64 = 4242;

/// (what, error when refused, `sluice acl add` arguments granting it ({} is the case's
/// resource name), the request returning its error code).
fn cases() -> Vec<(&'static str, i16, &'static str, Call)> {
    vec![
        // First: WRITE on any topic (granted below for Produce) also allows it (KIP-679).
        (
            "InitProducerId(idempotent)",
            CLUSTER_AUTH,
            "--operation IdempotentWrite --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &InitProducerIdRequest::default()
                            .with_transactional_id(None)
                            .with_transaction_timeout_ms(10000)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1),
                        4,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "Metadata",
            TOPIC_AUTH,
            "--operation Describe --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &MetadataRequest::default()
                            .with_topics(Some(vec![
                                metadata_request::MetadataRequestTopic::default()
                                    .with_name(Some(topic(n))),
                            ]))
                            .with_allow_auto_topic_creation(false),
                        12,
                    )
                    .await
                    .unwrap();
                r.topics[0].error_code
            }),
        ),
        (
            "OffsetForLeaderEpoch",
            TOPIC_AUTH,
            "--operation Describe --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &OffsetForLeaderEpochRequest::default()
                            .with_replica_id(BrokerId(-1))
                            .with_topics(vec![
                                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                                    .with_topic(topic(n))
                                    .with_partitions(vec![
                                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                                            .with_partition(0)
                                            .with_current_leader_epoch(0)
                                            .with_leader_epoch(0),
                                    ]),
                            ]),
                        4,
                    )
                    .await
                    .unwrap();
                r.topics[0].partitions[0].error_code
            }),
        ),
        (
            "Produce",
            TOPIC_AUTH,
            "--operation Write --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &ProduceRequest::default()
                            .with_acks(1)
                            .with_timeout_ms(5000)
                            .with_topic_data(vec![produce_request::TopicProduceData::default()
                                .with_name(topic(n))
                                .with_partition_data(vec![
                                    produce_request::PartitionProduceData::default()
                                        .with_index(0)
                                        .with_records(Some(one_record())),
                                ])]),
                        9,
                    )
                    .await
                    .unwrap();
                r.responses[0].partition_responses[0].error_code
            }),
        ),
        (
            "Fetch",
            TOPIC_AUTH,
            "--operation Read --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &FetchRequest::default()
                            .with_max_wait_ms(0)
                            .with_max_bytes(1 << 20)
                            .with_topics(vec![fetch_request::FetchTopic::default()
                                .with_topic(topic(n))
                                .with_partitions(vec![fetch_request::FetchPartition::default()
                                    .with_partition(0)
                                    .with_partition_max_bytes(1 << 20)])]),
                        12,
                    )
                    .await
                    .unwrap();
                r.responses[0].partitions[0].error_code
            }),
        ),
        (
            "ListOffsets",
            TOPIC_AUTH,
            "--operation Describe --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &ListOffsetsRequest::default().with_topics(vec![
                            list_offsets_request::ListOffsetsTopic::default()
                                .with_name(topic(n))
                                .with_partitions(vec![
                                    list_offsets_request::ListOffsetsPartition::default()
                                        .with_partition_index(0)
                                        .with_timestamp(-1),
                                ]),
                        ]),
                        7,
                    )
                    .await
                    .unwrap();
                r.topics[0].partitions[0].error_code
            }),
        ),
        (
            "CreateTopics",
            TOPIC_AUTH,
            "--operation Create --topic {}-new",
            call!(|c, n| {
                let r = c
                    .call(
                        &CreateTopicsRequest::default()
                            .with_timeout_ms(5000)
                            .with_topics(vec![create_topics_request::CreatableTopic::default()
                                .with_name(topic(&format!("{n}-new")))
                                .with_num_partitions(1)
                                .with_replication_factor(1)]),
                        7,
                    )
                    .await
                    .unwrap();
                let t = &r.topics[0];
                if t.error_code == 0 {
                    // Granted Create only: the topic is made, its configs are not shown.
                    assert_eq!(
                        t.topic_config_error_code, TOPIC_AUTH,
                        "configs need DescribeConfigs"
                    );
                    assert!(t.configs.as_ref().is_none_or(|c| c.is_empty()));
                }
                t.error_code
            }),
        ),
        (
            // READ on the group lets the request in; the topic, still unreadable, is refused
            // per partition (as Kafka does), not with one error for the whole request.
            "ShareFetch",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let mut a = as_admin(&c.addr).await;
                let md = a
                    .call(
                        &MetadataRequest::default().with_topics(Some(vec![
                            metadata_request::MetadataRequestTopic::default()
                                .with_name(Some(topic(n))),
                        ])),
                        12,
                    )
                    .await
                    .unwrap();
                let id = md.topics[0].topic_id;
                let hb = c
                    .call(
                        &ShareGroupHeartbeatRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_member_id(sb("member-1"))
                            .with_member_epoch(0)
                            .with_subscribed_topic_names(Some(vec![])),
                        1,
                    )
                    .await
                    .unwrap();
                let r = c
                    .call(
                        &ShareFetchRequest::default()
                            .with_group_id(Some(GroupId(sb(n))))
                            .with_member_id(Some(sb("member-1")))
                            .with_share_session_epoch(0)
                            .with_max_wait_ms(0)
                            .with_max_records(10)
                            .with_topics(vec![share_fetch_request::FetchTopic::default()
                                .with_topic_id(id)
                                .with_partitions(vec![
                                    share_fetch_request::FetchPartition::default()
                                        .with_partition_index(0),
                                ])]),
                        1,
                    )
                    .await
                    .unwrap();
                assert!(
                    r.error_code == GROUP_AUTH || r.error_code == 0,
                    "ShareFetch: {r:?}"
                );
                if r.error_code == 0 {
                    assert_eq!(hb.error_code, 0, "the heartbeat passed too");
                    assert_eq!(
                        r.responses[0].partitions[0].error_code, TOPIC_AUTH,
                        "the unreadable topic is refused per partition"
                    );
                }
                r.error_code
            }),
        ),
        (
            "CreatePartitions",
            TOPIC_AUTH,
            "--operation Alter --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &CreatePartitionsRequest::default()
                            .with_timeout_ms(5000)
                            .with_topics(vec![
                                create_partitions_request::CreatePartitionsTopic::default()
                                    .with_name(topic(n))
                                    .with_count(2),
                            ]),
                        3,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
        (
            "DescribeConfigs",
            TOPIC_AUTH,
            "--operation DescribeConfigs --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DescribeConfigsRequest::default().with_resources(vec![
                            describe_configs_request::DescribeConfigsResource::default()
                                .with_resource_type(2)
                                .with_resource_name(sb(n)),
                        ]),
                        4,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
        (
            "IncrementalAlterConfigs",
            TOPIC_AUTH,
            "--operation AlterConfigs --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &IncrementalAlterConfigsRequest::default().with_resources(vec![
                            incremental_alter_configs_request::AlterConfigsResource::default()
                                .with_resource_type(2)
                                .with_resource_name(sb(n))
                                .with_configs(vec![
                                    incremental_alter_configs_request::AlterableConfig::default()
                                        .with_name(sb("retention.ms"))
                                        .with_config_operation(0)
                                        .with_value(Some(sb("60000"))),
                                ]),
                        ]),
                        1,
                    )
                    .await
                    .unwrap();
                r.responses[0].error_code
            }),
        ),
        (
            "DeleteRecords",
            TOPIC_AUTH,
            "--operation Delete --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DeleteRecordsRequest::default()
                            .with_timeout_ms(5000)
                            .with_topics(vec![
                                delete_records_request::DeleteRecordsTopic::default()
                                    .with_name(topic(n))
                                    .with_partitions(vec![
                                        delete_records_request::DeleteRecordsPartition::default()
                                            .with_partition_index(0)
                                            .with_offset(0),
                                    ]),
                            ]),
                        2,
                    )
                    .await
                    .unwrap();
                r.topics[0].partitions[0].error_code
            }),
        ),
        (
            "DeleteTopics",
            TOPIC_AUTH,
            "--operation Delete --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DeleteTopicsRequest::default()
                            .with_timeout_ms(5000)
                            .with_topic_names(vec![topic(n)]),
                        5,
                    )
                    .await
                    .unwrap();
                r.responses[0].error_code
            }),
        ),
        (
            "FindCoordinator(group)",
            GROUP_AUTH,
            "--operation Describe --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &FindCoordinatorRequest::default()
                            .with_key_type(0)
                            .with_coordinator_keys(vec![sb(n)]),
                        4,
                    )
                    .await
                    .unwrap();
                r.coordinators[0].error_code
            }),
        ),
        (
            "OffsetFetch",
            GROUP_AUTH,
            "--operation Describe --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &OffsetFetchRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_topics(None),
                        7,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "Heartbeat",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &HeartbeatRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_member_id(sb("m"))
                            .with_generation_id(1),
                        4,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DeleteGroups",
            GROUP_AUTH,
            "--operation Delete --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(n))]),
                        2,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
        (
            "InitProducerId(transactional)",
            TXN_AUTH,
            "--operation Write --transactional-id {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &InitProducerIdRequest::default()
                            .with_transactional_id(Some(TransactionalId(sb(n))))
                            .with_transaction_timeout_ms(10000)
                            .with_producer_id(ProducerId(-1))
                            .with_producer_epoch(-1),
                        4,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "FindCoordinator(transaction)",
            TXN_AUTH,
            "--operation Describe --transactional-id {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &FindCoordinatorRequest::default()
                            .with_key_type(1)
                            .with_coordinator_keys(vec![sb(n)]),
                        4,
                    )
                    .await
                    .unwrap();
                r.coordinators[0].error_code
            }),
        ),
        (
            // The brokers' batched form (v4+) and its verify_only probe: CLUSTER_ACTION.
            "AddPartitionsToTxn(v4)",
            CLUSTER_AUTH,
            "--operation ClusterAction --cluster",
            call!(|c, n| {
                let r = c
                    .call(
                        &AddPartitionsToTxnRequest::default().with_transactions(vec![
                            add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                                .with_transactional_id(TransactionalId(sb(n)))
                                .with_producer_id(ProducerId(SOME_PRODUCER))
                                .with_producer_epoch(0)
                                .with_verify_only(true)
                                .with_topics(vec![
                                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                                        .with_name(topic(n))
                                        .with_partitions(vec![0]),
                                ]),
                        ]),
                        4,
                    )
                    .await
                    .unwrap();
                // The broker's request: once CLUSTER_ACTION lets it in, the producer's rights
                // (checked when it produced) are not asked again, so no partition is refused.
                match r.error_code {
                    0 => {
                        r.results_by_transaction[0].topic_results[0].results_by_partition[0]
                            .partition_error_code
                    }
                    e => e,
                }
            }),
        ),
        (
            // A member id is asked for first (KIP-394): past the ACL, not refused by it.
            "JoinGroup",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &JoinGroupRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_session_timeout_ms(10_000)
                            .with_rebalance_timeout_ms(10_000)
                            .with_member_id(sb(""))
                            .with_protocol_type(sb("consumer"))
                            .with_protocols(vec![
                                join_group_request::JoinGroupRequestProtocol::default()
                                    .with_name(sb("range"))
                                    .with_metadata(bytes::Bytes::new()),
                            ]),
                        5,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "SyncGroup",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &SyncGroupRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_generation_id(1)
                            .with_member_id(sb("m")),
                        3,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            // The topic is readable; the group decides.
            "OffsetCommit",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                admin_grants_alice(&c.addr, 2, n, 3).await;
                let r = c
                    .call(
                        &OffsetCommitRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_generation_id_or_member_epoch(-1)
                            .with_member_id(sb(""))
                            .with_topics(vec![
                                offset_commit_request::OffsetCommitRequestTopic::default()
                                    .with_name(topic(n))
                                    .with_partitions(vec![
                                    offset_commit_request::OffsetCommitRequestPartition::default()
                                        .with_partition_index(0)
                                        .with_committed_offset(0),
                                ]),
                            ]),
                        8,
                    )
                    .await
                    .unwrap();
                r.topics[0].partitions[0].error_code
            }),
        ),
        (
            // Authorized operations reported truthfully: DESCRIBE (8) alone, as granted.
            "DescribeGroups",
            GROUP_AUTH,
            "--operation Describe --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DescribeGroupsRequest::default()
                            .with_groups(vec![GroupId(sb(n))])
                            .with_include_authorized_operations(true),
                        5,
                    )
                    .await
                    .unwrap();
                let g = &r.groups[0];
                if g.error_code == 0 {
                    assert_eq!(g.authorized_operations, 1 << 8, "DescribeGroups: {g:?}");
                }
                g.error_code
            }),
        ),
        (
            "ConsumerGroupHeartbeat",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &ConsumerGroupHeartbeatRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_member_id(sb("AAAAAAAAAAAAAAAAAAAAAA"))
                            .with_member_epoch(0)
                            .with_rebalance_timeout_ms(10_000)
                            .with_subscribed_topic_names(Some(vec![]))
                            .with_topic_partitions(Some(vec![])),
                        0,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            // The topic is writable; the transactional id decides.
            "AddPartitionsToTxn",
            TXN_AUTH,
            "--operation Write --transactional-id {}",
            call!(|c, n| {
                admin_grants_alice(&c.addr, 2, n, 4).await;
                let r = c
                    .call(
                        &AddPartitionsToTxnRequest::default()
                            .with_v3_and_below_transactional_id(TransactionalId(sb(n)))
                            .with_v3_and_below_producer_id(ProducerId(SOME_PRODUCER))
                            .with_v3_and_below_producer_epoch(0)
                            .with_v3_and_below_topics(vec![
                                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                                    .with_name(topic(n))
                                    .with_partitions(vec![0]),
                            ]),
                        3,
                    )
                    .await
                    .unwrap();
                r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
            }),
        ),
        (
            // The group is readable; the transactional id decides.
            "AddOffsetsToTxn",
            TXN_AUTH,
            "--operation Write --transactional-id {}",
            call!(|c, n| {
                admin_grants_alice(&c.addr, 3, n, 3).await;
                let r = c
                    .call(
                        &AddOffsetsToTxnRequest::default()
                            .with_transactional_id(TransactionalId(sb(n)))
                            .with_producer_id(ProducerId(SOME_PRODUCER))
                            .with_producer_epoch(0)
                            .with_group_id(GroupId(sb(n))),
                        3,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            // Group and topic are readable; the transactional id decides.
            "TxnOffsetCommit",
            TXN_AUTH,
            "--operation Write --transactional-id {}",
            call!(|c, n| {
                admin_grants_alice(&c.addr, 3, n, 3).await;
                admin_grants_alice(&c.addr, 2, n, 3).await;
                let r = c
                    .call(
                        &TxnOffsetCommitRequest::default()
                            .with_transactional_id(TransactionalId(sb(n)))
                            .with_group_id(GroupId(sb(n)))
                            .with_producer_id(ProducerId(SOME_PRODUCER))
                            .with_producer_epoch(0)
                            .with_generation_id(-1)
                            .with_member_id(sb(""))
                            .with_topics(vec![
                                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                                    .with_name(topic(n))
                                    .with_partitions(vec![
                                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                            .with_partition_index(0)
                                            .with_committed_offset(0),
                                    ]),
                            ]),
                        3,
                    )
                    .await
                    .unwrap();
                r.topics[0].partitions[0].error_code
            }),
        ),
        (
            "EndTxn",
            TXN_AUTH,
            "--operation Write --transactional-id {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &EndTxnRequest::default()
                            .with_transactional_id(TransactionalId(sb(n)))
                            .with_producer_id(ProducerId(SOME_PRODUCER))
                            .with_producer_epoch(0)
                            .with_committed(true),
                        3,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "LeaveGroup",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &LeaveGroupRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_members(vec![leave_group_request::MemberIdentity::default()
                                .with_member_id(sb("someone"))]),
                        3,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "OffsetDelete",
            GROUP_AUTH,
            "--operation Delete --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &OffsetDeleteRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_topics(vec![
                                offset_delete_request::OffsetDeleteRequestTopic::default()
                                    .with_name(topic(n))
                                    .with_partitions(vec![
                                        offset_delete_request::OffsetDeleteRequestPartition::default()
                                            .with_partition_index(0),
                                    ]),
                            ]),
                        0,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DescribeConfigs(group)",
            GROUP_AUTH,
            "--operation DescribeConfigs --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DescribeConfigsRequest::default().with_resources(vec![
                            describe_configs_request::DescribeConfigsResource::default()
                                .with_resource_type(32)
                                .with_resource_name(sb(n))
                                .with_configuration_keys(None),
                        ]),
                        4,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
        (
            "IncrementalAlterConfigs(group)",
            GROUP_AUTH,
            "--operation AlterConfigs --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &IncrementalAlterConfigsRequest::default().with_resources(vec![
                            incremental_alter_configs_request::AlterConfigsResource::default()
                                .with_resource_type(32)
                                .with_resource_name(sb(n))
                                .with_configs(vec![]),
                        ]),
                        1,
                    )
                    .await
                    .unwrap();
                r.responses[0].error_code
            }),
        ),
        (
            "DescribeTransactions",
            TXN_AUTH,
            "--operation Describe --transactional-id {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DescribeTransactionsRequest::default()
                            .with_transactional_ids(vec![TransactionalId(sb(n))]),
                        0,
                    )
                    .await
                    .unwrap();
                r.transaction_states[0].error_code
            }),
        ),
        (
            "DescribeProducers",
            TOPIC_AUTH,
            "--operation Read --topic {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &DescribeProducersRequest::default().with_topics(vec![
                            describe_producers_request::TopicRequest::default()
                                .with_name(topic(n))
                                .with_partition_indexes(vec![0]),
                        ]),
                        0,
                    )
                    .await
                    .unwrap();
                r.topics[0].partitions[0].error_code
            }),
        ),
        (
            "ShareGroupHeartbeat",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &ShareGroupHeartbeatRequest::default()
                            .with_group_id(GroupId(sb(n)))
                            .with_member_id(sb("member-1"))
                            .with_member_epoch(0)
                            .with_subscribed_topic_names(Some(vec![])),
                        1,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "ShareAcknowledge",
            GROUP_AUTH,
            "--operation Read --group {}",
            call!(|c, n| {
                let r = c
                    .call(
                        &ShareAcknowledgeRequest::default()
                            .with_group_id(Some(GroupId(sb(n))))
                            .with_member_id(Some(sb("member-1")))
                            .with_share_session_epoch(1),
                        1,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "CreateAcls",
            CLUSTER_AUTH,
            "--operation Alter --cluster",
            call!(|c, n| {
                let r = c
                    .call(
                        &CreateAclsRequest::default().with_creations(vec![
                            create_acls_request::AclCreation::default()
                                .with_resource_type(2)
                                .with_resource_name(sb(n))
                                .with_resource_pattern_type(3)
                                .with_principal(sb("User:bob"))
                                .with_host(sb("*"))
                                .with_operation(3)
                                .with_permission_type(3),
                        ]),
                        3,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
    ]
}

/// Every API in the table: refused with its Kafka error code, then allowed by exactly the ACL
/// Kafka requires for it, granted with `sluice acl add` by a super user.
#[test]
fn each_api_refuses_an_unauthorised_principal_and_serves_an_authorised_one() {
    let s = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut report = Vec::new();
        for (i, (what, denied, grant, call)) in cases().into_iter().enumerate() {
            let name = format!("acl{i}");
            // A topic of that name exists (made by the super user), so "allowed" is a real
            // success, not UNKNOWN_TOPIC.
            s.admin_cli(&["topic", "create", &name, "--partitions", "1"]);
            let mut alice = s.client("alice", "alicepw").await;
            let before = call(&mut alice, &name).await;
            assert_eq!(before, denied, "{what} by alice without ACLs");
            let grant = grant.replace("{}", &name);
            let mut args = vec!["acl", "add", "--principal", "User:alice"];
            args.extend(grant.split(' '));
            s.admin_cli(&args);
            let mut alice = s.client("alice", "alicepw").await;
            let after = call(&mut alice, &name).await;
            assert!(
                after != denied
                    && after != TOPIC_AUTH
                    && after != GROUP_AUTH
                    && after != CLUSTER_AUTH
                    && after != TXN_AUTH,
                "{what} by alice after `{grant}`: error {after}"
            );
            report.push(format!("{what}: {denied} -> {after}"));
        }
        println!("{}", report.join("\n"));
        // DescribeCluster needs no ACL on a broker (Kafka's controller asks for ALTER):
        // without DESCRIBE, bob learns he may do nothing to the cluster.
        let mut bob = s.client("bob", "bobpw").await;
        let r = bob
            .call(
                &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
                1,
            )
            .await
            .unwrap();
        assert_eq!((r.error_code, r.cluster_authorized_operations), (0, 0));
        // A commit on a topic alice may not describe: refused per partition, and nothing of
        // it shown (its metadata, its leader epoch).
        let mut a = as_admin(&s.sasl).await;
        let committed = a
            .call(
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(sb("leaky")))
                    .with_generation_id_or_member_epoch(-1)
                    .with_member_id(sb(""))
                    .with_topics(vec![
                        offset_commit_request::OffsetCommitRequestTopic::default()
                            .with_name(topic("acl0"))
                            .with_partitions(vec![
                                offset_commit_request::OffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(1)
                                    .with_committed_leader_epoch(7)
                                    .with_committed_metadata(Some(sb("secret"))),
                            ]),
                    ]),
                8,
            )
            .await
            .unwrap();
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
        admin_grants_alice(&s.sasl, 3, "leaky", 8).await;
        let mut alice = s.client("alice", "alicepw").await;
        let r = alice
            .call(
                &OffsetFetchRequest::default()
                    .with_group_id(GroupId(sb("leaky")))
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic("acl0"))
                            .with_partition_indexes(vec![0]),
                    ])),
                7,
            )
            .await
            .unwrap();
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (
                p.error_code,
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata.as_ref().map(|m| m.to_string())
            ),
            (TOPIC_AUTH, -1, -1, Some(String::new())),
            "a refused partition's commit"
        );
        // Transactional records need a transactional id, whatever ACLs allow: else a
        // principal allowed to write the topic could write into another's transaction.
        // alice may write acl3: the table's Produce case granted it.
        let mut batch = sluice::records::encode_batch_as(
            &[sluice::records::Record {
                value: Some(bytes::Bytes::from_static(b"v")),
                ..Default::default()
            }],
            sluice::records::Compression::None,
            Some(sluice::records::ProducerFields {
                producer_id: SOME_PRODUCER,
                epoch: 0,
                base_sequence: 0,
            }),
        )
        .unwrap()
        .to_vec();
        // attributes: bit 4 is "transactional"; the CRC covers them.
        batch[22] |= 0x10;
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut alice = s.client("alice", "alicepw").await;
        let r = alice
            .call(
                &ProduceRequest::default()
                    .with_transactional_id(None)
                    .with_acks(1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![produce_request::TopicProduceData::default()
                        .with_name(topic("acl3"))
                        .with_partition_data(vec![
                            produce_request::PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(bytes::Bytes::from(batch))),
                        ])]),
                9,
            )
            .await
            .unwrap();
        assert_eq!(
            r.responses[0].partition_responses[0].error_code, TXN_AUTH,
            "transactional records without a transactional id"
        );
    });
    // A DENY beats an ALLOW, and a prefixed ALLOW covers every matching name.
    s.admin_cli(&[
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--operation",
        "All",
        "--topic",
        "pre-",
        "--prefixed",
    ]);
    s.admin_cli(&[
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "pre-secret",
        "--deny",
    ]);
    s.admin_cli(&["topic", "create", "pre-open"]);
    s.admin_cli(&["topic", "create", "pre-secret"]);
    let listed = s.admin_cli(&["acl", "list", "--topic", "pre-secret"]);
    assert!(
        listed.contains("DENY") && listed.contains("User:alice"),
        "{listed}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.admin_cli(&[
        "acl",
        "list",
        "--topic",
        "pre-secret",
        "--format",
        "json",
    ]))
    .expect("acl list --format json");
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|a| a["principal"] == "User:alice"
                && a["permission"] == "DENY"
                && a["operation"] == "Read"),
        "{json}"
    );
    rt.block_on(async {
        let cases = cases();
        let fetch = cases.iter().find(|c| c.0 == "Fetch").unwrap().3;
        let mut alice = s.client("alice", "alicepw").await;
        assert_eq!(
            fetch(&mut alice, "pre-open").await,
            0,
            "prefixed ALL allows READ"
        );
        assert_eq!(
            fetch(&mut alice, "pre-secret").await,
            TOPIC_AUTH,
            "DENY wins"
        );
        // Metadata for every topic lists only what alice may describe.
        let r = alice
            .call(&MetadataRequest::default().with_topics(None), 12)
            .await
            .unwrap();
        let mut names: Vec<String> = r
            .topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .collect();
        names.sort();
        assert!(
            names.contains(&"pre-open".to_string()) && names.contains(&"pre-secret".to_string()),
            "{names:?}"
        );
        // acl0 exists, but alice holds no ACL on it.
        assert!(!names.contains(&"acl0".to_string()), "{names:?}");
        // Authorized operations, truthfully: ALL by the prefix gives every topic operation
        // (READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10,
        // ALTER_CONFIGS 11); the DENY takes READ away from pre-secret only.
        let every: i32 = [3, 4, 5, 6, 7, 8, 10, 11].iter().map(|b| 1 << b).sum();
        let r = alice
            .call(
                &MetadataRequest::default()
                    .with_topics(Some(
                        ["pre-open", "pre-secret"]
                            .map(|n| {
                                metadata_request::MetadataRequestTopic::default()
                                    .with_name(Some(topic(n)))
                            })
                            .to_vec(),
                    ))
                    .with_include_topic_authorized_operations(true),
                12,
            )
            .await
            .unwrap();
        let ops: Vec<(String, i32)> = r
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.as_ref().unwrap().0.to_string(),
                    t.topic_authorized_operations,
                )
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("pre-open".to_string(), every),
                ("pre-secret".to_string(), every & !(1 << 3))
            ],
            "topic_authorized_operations"
        );
    });
    // Metadata asked to create a missing topic: with CREATE (the prefixed ALL) the topic is
    // made and answered LEADER_NOT_AVAILABLE; with DESCRIBE alone the answer is
    // TOPIC_AUTHORIZATION_FAILED, as Kafka's, and nothing is created.
    s.admin_cli(&[
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--operation",
        "Describe",
        "--topic",
        "see-only",
    ]);
    rt.block_on(async {
        let mut alice = s.client("alice", "alicepw").await;
        for (name, want) in [("pre-auto", 5), ("see-only", TOPIC_AUTH)] {
            let r = alice
                .call(
                    &MetadataRequest::default()
                        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                        )
                        .with_name(Some(topic(name)))]))
                        .with_allow_auto_topic_creation(true),
                    12,
                )
                .await
                .unwrap();
            assert_eq!(r.topics[0].error_code, want, "auto-creating {name}");
        }
    });
    let listed = s.admin_cli(&["topic", "list"]);
    assert!(
        listed.contains("pre-auto") && !listed.contains("see-only"),
        "{listed}"
    );
    // Removing the ACLs takes the access away again.
    let removed = s.admin_cli(&[
        "acl",
        "remove",
        "--principal",
        "User:alice",
        "--topic",
        "pre-",
        "--prefixed",
    ]);
    assert!(removed.starts_with("1 ACL"), "{removed}");
    rt.block_on(async {
        let fetch = cases().iter().find(|c| c.0 == "Fetch").unwrap().3;
        let mut alice = s.client("alice", "alicepw").await;
        assert_eq!(fetch(&mut alice, "pre-open").await, TOPIC_AUTH);
    });
    // ACLs survive a restart.
    let mut broker = s.broker;
    broker.restart();
    let s = Setup {
        broker,
        sasl: s.sasl,
    };
    rt.block_on(async {
        let all = cases();
        let at = all.iter().position(|c| c.0 == "Fetch").unwrap();
        let fetch = all[at].3;
        let mut alice = s.client("alice", "alicepw").await;
        // The table's case i ran on topic acl{i}.
        assert_eq!(
            fetch(&mut alice, &format!("acl{at}")).await,
            0,
            "the Fetch ACL after a restart"
        );
        assert_eq!(fetch(&mut alice, "pre-secret").await, TOPIC_AUTH);
    });
}

/// Kafka's own `kafka-acls` (org.apache.kafka.tools.AclCommand, Kafka 4.x) adds, lists and
/// removes ACLs on sluice, authenticating with SCRAM.
#[test]
fn kafka_acls_tool_manages_acls() {
    require_java_clients();
    let s = start();
    let config = s.broker.scratch().join("admin.properties");
    std::fs::write(
        &config,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"adminpw\";\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let run = |args: &[&str]| {
        let mut a = vec![
            "--bootstrap-server",
            s.sasl.as_str(),
            "--command-config",
            config.as_str(),
        ];
        a.extend_from_slice(args);
        let done = Script::spawn_java(&s.broker, "org.apache.kafka.tools.AclCommand", &a)
            .finish(Duration::from_secs(120));
        assert!(
            done.success(),
            "kafka-acls {}\n{}\n{}",
            args.join(" "),
            done.report(),
            s.broker.log_tail()
        );
        done.stdout
    };
    run(&[
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--operation",
        "Describe",
        "--topic",
        "orders",
    ]);
    run(&[
        "--add",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--group",
        "billing",
        "--resource-pattern-type",
        "prefixed",
    ]);
    let listed = run(&["--list", "--topic", "orders"]);
    assert!(
        listed.contains("User:alice") && listed.contains("READ") && listed.contains("DESCRIBE"),
        "{listed}"
    );
    let ours = s.admin_cli(&["acl", "list"]);
    assert!(
        ours.contains("billing") && ours.contains("PREFIXED"),
        "{ours}"
    );
    run(&[
        "--remove",
        "--force",
        "--allow-principal",
        "User:alice",
        "--operation",
        "Read",
        "--topic",
        "orders",
    ]);
    let after = s.admin_cli(&["acl", "list", "--topic", "orders"]);
    assert!(
        !after.contains("Read") && after.contains("Describe"),
        "{after}"
    );
}

/// An abort marker for a partition that does not exist: past the ACL check, the answer is
/// UNKNOWN_TOPIC_OR_PARTITION.
fn abort_marker() -> WriteTxnMarkersRequest {
    WriteTxnMarkersRequest::default().with_markers(vec![
        write_txn_markers_request::WritableTxnMarker::default()
            .with_producer_id(ProducerId(SOME_PRODUCER))
            .with_producer_epoch(0)
            .with_transaction_result(false)
            .with_topics(vec![
                write_txn_markers_request::WritableTxnMarkerTopic::default()
                    .with_name(topic("no-such-topic"))
                    .with_partition_indexes(vec![0]),
            ]),
    ])
}

fn end_of_epoch_0(name: &str) -> OffsetForLeaderEpochRequest {
    OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(topic(name))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0),
                ]),
        ])
}

fn share_fetch(group: &str, epoch: i32, topic_id: Option<uuid::Uuid>) -> ShareFetchRequest {
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(sb(group))))
        .with_member_id(Some(sb("member-1")))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(0)
        .with_max_records(10)
        .with_topics(
            topic_id
                .map(|id| {
                    share_fetch_request::FetchTopic::default()
                        .with_topic_id(id)
                        .with_partitions(vec![
                            share_fetch_request::FetchPartition::default().with_partition_index(0)
                        ])
                })
                .into_iter()
                .collect(),
        )
}

/// What a refusal says, beyond its code, as Kafka says it: the right checked before the
/// topic's existence, a topic id refused as such, refused groups without operations, the
/// administrators' grants Kafka also accepts (ALTER for markers, CLUSTER_ACTION for leader
/// epochs), per-partition errors where the Java AdminClient reads them, READ re-checked on
/// a share session's partitions, and a group described only with its members' topics.
#[test]
fn refusals_follow_kafka_in_their_details() {
    let s = start();
    for t in ["hidden", "shared-t", "sluice.deployments", "t-kept"] {
        s.admin_cli(&["topic", "create", t, "--partitions", "1"]);
    }
    let acl = |verb: &str, args: &[&str]| {
        let mut a = vec!["acl", verb, "--principal", "User:bob"];
        a.extend(args);
        s.admin_cli(&a);
    };
    // A deployment names the principal its pipeline acts as: writing one takes ALTER on the
    // cluster besides WRITE on the topic, or any writer could deploy as a super user.
    acl(
        "add",
        &["--operation", "Write", "--topic", "sluice.deployments"],
    );
    let produce = cases().iter().find(|c| c.0 == "Produce").unwrap().3;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared_id = rt.block_on(async {
        let mut admin = as_admin(&s.sasl).await;
        let md = admin
            .call(
                &MetadataRequest::default().with_topics(Some(
                    ["hidden", "shared-t"]
                        .map(|n| {
                            metadata_request::MetadataRequestTopic::default()
                                .with_name(Some(topic(n)))
                        })
                        .to_vec(),
                )),
                12,
            )
            .await
            .unwrap();
        // A KIP-848 member (the super user) subscribed to the topic bob may not describe.
        let hb = admin
            .call(
                &ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(sb("theirs")))
                    .with_member_id(sb("AAAAAAAAAAAAAAAAAAAAAA"))
                    .with_member_epoch(0)
                    .with_rebalance_timeout_ms(10_000)
                    .with_subscribed_topic_names(Some(vec![topic("hidden")]))
                    .with_topic_partitions(Some(vec![])),
                0,
            )
            .await
            .unwrap();
        assert_eq!(hb.error_code, 0, "the super user joins 'theirs'");
        let mut bob = s.client("bob", "bobpw").await;

        // A wrong password is answered after Kafka's connection.failed.authentication.delay.ms
        // (100 ms). A login's own cost (SCRAM's key derivation, a debug build) is of the same
        // order, so the refusals are timed against right logins: the fastest of each.
        let login = |password: &'static str| {
            let s = &s;
            async move {
                let asked = std::time::Instant::now();
                let ok = s.login("bob", password).await.is_ok();
                (ok, asked.elapsed())
            }
        };
        let (mut right, mut wrong) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let (ok, took) = login("bobpw").await;
            assert!(ok, "bob logs in");
            right = right.min(took);
            let (ok, took) = login("guess").await;
            assert!(!ok, "a wrong password is refused");
            wrong = wrong.min(took);
        }
        assert!(
            wrong >= right + Duration::from_millis(70),
            "refused after {wrong:?}, a right login takes {right:?}"
        );

        // Metadata by id: the id is not secret, the refusal is TOPIC_AUTHORIZATION_FAILED.
        let r = bob
            .call(
                &MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(None)
                        .with_topic_id(md.topics[0].topic_id),
                ])),
                12,
            )
            .await
            .unwrap();
        assert_eq!(
            (r.topics[0].error_code, r.topics[0].name.is_none()),
            (TOPIC_AUTH, true),
            "Metadata by the id of a topic bob may not describe"
        );

        // AlterPartitionReassignments: the error at the top and on every partition.
        let r = bob
            .call(
                &AlterPartitionReassignmentsRequest::default().with_topics(vec![
                    alter_partition_reassignments_request::ReassignableTopic::default()
                        .with_name(topic("hidden"))
                        .with_partitions(vec![
                            alter_partition_reassignments_request::ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(vec![BrokerId(1)])),
                        ]),
                ]),
                0,
            )
            .await
            .unwrap();
        assert_eq!(
            (r.error_code, r.responses[0].partitions[0].error_code),
            (CLUSTER_AUTH, CLUSTER_AUTH),
            "refused reassignment"
        );

        // A group bob may not describe: refused, and no operations reported for it.
        let r = bob
            .call(
                &DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(sb("theirs"))])
                    .with_include_authorized_operations(true),
                5,
            )
            .await
            .unwrap();
        assert_eq!(
            (r.groups[0].error_code, r.groups[0].authorized_operations),
            (GROUP_AUTH, i32::MIN),
            "DescribeGroups of a refused group"
        );

        let r = bob.call(&abort_marker(), 1).await.unwrap();
        assert_eq!(
            r.markers[0].topics[0].partitions[0].error_code, CLUSTER_AUTH,
            "markers without a grant"
        );
        let r = bob.call(&end_of_epoch_0("hidden"), 4).await.unwrap();
        assert_eq!(r.topics[0].partitions[0].error_code, TOPIC_AUTH);
        assert_eq!(
            produce(&mut bob, "sluice.deployments").await,
            TOPIC_AUTH,
            "a deployment by a writer that is no operator"
        );
        md.topics[1].topic_id
    });

    acl(
        "add",
        &["--operation", "Describe", "--topic", "t-", "--prefixed"],
    );
    // KIP-664: ALTER on the cluster is how an administrator aborts a hanging transaction.
    acl("add", &["--operation", "Alter", "--cluster"]);
    acl("add", &["--operation", "Describe", "--group", "theirs"]);
    acl("add", &["--operation", "Read", "--group", "sg"]);
    acl("add", &["--operation", "Read", "--topic", "shared-t"]);
    rt.block_on(async {
        let mut bob = s.client("bob", "bobpw").await;
        // With DESCRIBE but not DELETE on a missing name, Kafka 4's controller reports the
        // missing topic (it checks DESCRIBE, existence, then DELETE).
        let r = bob
            .call(
                &DeleteTopicsRequest::default()
                    .with_topic_names(vec![topic("t-missing")])
                    .with_timeout_ms(5000),
                5,
            )
            .await
            .unwrap();
        assert_eq!(
            r.responses[0].error_code, 3,
            "DeleteTopics of a missing name"
        );
        // By id, a topic bob may see but not delete: refused, with its name.
        let md = bob
            .call(
                &MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(topic("t-kept")))])),
                12,
            )
            .await
            .unwrap();
        let r = bob
            .call(
                &DeleteTopicsRequest::default()
                    .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                        .with_name(None)
                        .with_topic_id(md.topics[0].topic_id)])
                    .with_timeout_ms(5000),
                6,
            )
            .await
            .unwrap();
        assert_eq!(
            (
                r.responses[0].error_code,
                r.responses[0].name.as_ref().map(|n| n.0.to_string())
            ),
            (TOPIC_AUTH, Some("t-kept".to_string())),
            "DeleteTopics by id"
        );
        let r = bob.call(&abort_marker(), 1).await.unwrap();
        assert_eq!(
            r.markers[0].topics[0].partitions[0].error_code, 3,
            "markers with ALTER (alone) on the cluster get past the check"
        );
        assert_eq!(
            produce(&mut bob, "sluice.deployments").await,
            0,
            "a deployment by an operator (a record the host cannot read, and logs)"
        );
        // bob may describe the group, but its member reads a topic bob may not describe.
        let r = bob
            .call(
                &ConsumerGroupDescribeRequest::default()
                    .with_group_ids(vec![GroupId(sb("theirs"))])
                    .with_include_authorized_operations(true),
                0,
            )
            .await
            .unwrap();
        let g = &r.groups[0];
        assert_eq!(
            (g.error_code, g.members.len(), g.authorized_operations),
            (TOPIC_AUTH, 0, i32::MIN),
            "ConsumerGroupDescribe hiding its members' topics: {g:?}"
        );
        // A share session on a readable topic.
        let hb = bob
            .call(
                &ShareGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(sb("sg")))
                    .with_member_id(sb("member-1"))
                    .with_member_epoch(0)
                    .with_subscribed_topic_names(Some(vec![topic("shared-t")])),
                1,
            )
            .await
            .unwrap();
        assert_eq!(hb.error_code, 0, "{hb:?}");
        let r = bob
            .call(&share_fetch("sg", 0, Some(shared_id)), 1)
            .await
            .unwrap();
        assert_eq!(
            (r.error_code, r.responses[0].partitions[0].error_code),
            (0, 0),
            "the session's first fetch: {r:?}"
        );
    });
    acl("remove", &["--operation", "Read", "--topic", "shared-t"]);
    acl("add", &["--operation", "ClusterAction", "--cluster"]);
    rt.block_on(async {
        let mut bob = s.client("bob", "bobpw").await;
        let r = bob.call(&end_of_epoch_0("hidden"), 4).await.unwrap();
        assert_eq!(
            r.topics[0].partitions[0].error_code, 0,
            "OffsetForLeaderEpoch with CLUSTER_ACTION"
        );
        // The next fetch of the session names no topic: the session's partition is checked.
        let r = bob.call(&share_fetch("sg", 1, None), 1).await.unwrap();
        assert_eq!(r.error_code, 0, "{r:?}");
        let parts: Vec<(uuid::Uuid, i32, i16)> = r
            .responses
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic_id, p.partition_index, p.error_code))
            })
            .collect();
        assert_eq!(
            parts,
            [(shared_id, 0, TOPIC_AUTH)],
            "READ revoked mid-session"
        );
    });
}

/// The cluster's APIs, as (what, `sluice acl add` arguments granting what Kafka requires, the
/// request returning its error code). Each runs as a principal of its own: the cluster is
/// one resource, so grants for one case would let the next through.
fn cluster_cases() -> Vec<(&'static str, &'static str, Call)> {
    // The broker's node id, as DescribeConfigs names it.
    const BROKER: &str = "1";
    vec![
        (
            "DescribeLogDirs",
            "--operation Describe --cluster",
            call!(|c, _n| {
                let r = c
                    .call(&DescribeLogDirsRequest::default().with_topics(None), 4)
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "ListPartitionReassignments",
            "--operation Describe --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &ListPartitionReassignmentsRequest::default().with_timeout_ms(5000),
                        0,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DescribeAcls",
            "--operation Describe --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &DescribeAclsRequest::default()
                            .with_resource_type_filter(1)
                            .with_pattern_type_filter(1)
                            .with_operation(1)
                            .with_permission_type(1),
                        3,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DescribeUserScramCredentials",
            "--operation Describe --cluster",
            call!(|c, _n| {
                let r = c
                    .call(&DescribeUserScramCredentialsRequest::default(), 0)
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DescribeClientQuotas",
            "--operation DescribeConfigs --cluster",
            call!(|c, _n| {
                let r = c
                    .call(&DescribeClientQuotasRequest::default(), 1)
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DescribeConfigs(broker)",
            "--operation DescribeConfigs --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &DescribeConfigsRequest::default().with_resources(vec![
                            describe_configs_request::DescribeConfigsResource::default()
                                .with_resource_type(4)
                                .with_resource_name(sb(BROKER))
                                .with_configuration_keys(None),
                        ]),
                        4,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
        (
            "AlterConfigs(broker)",
            "--operation AlterConfigs --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &AlterConfigsRequest::default().with_resources(vec![
                            alter_configs_request::AlterConfigsResource::default()
                                .with_resource_type(4)
                                .with_resource_name(sb(BROKER))
                                .with_configs(vec![]),
                        ]),
                        2,
                    )
                    .await
                    .unwrap();
                r.responses[0].error_code
            }),
        ),
        (
            "IncrementalAlterConfigs(broker)",
            "--operation AlterConfigs --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &IncrementalAlterConfigsRequest::default().with_resources(vec![
                            incremental_alter_configs_request::AlterConfigsResource::default()
                                .with_resource_type(4)
                                .with_resource_name(sb(BROKER))
                                .with_configs(vec![]),
                        ]),
                        1,
                    )
                    .await
                    .unwrap();
                r.responses[0].error_code
            }),
        ),
        (
            "AlterClientQuotas",
            "--operation AlterConfigs --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &AlterClientQuotasRequest::default().with_entries(vec![
                            alter_client_quotas_request::EntryData::default()
                                .with_entity(vec![
                                    alter_client_quotas_request::EntityData::default()
                                        .with_entity_type(sb("client-id"))
                                        .with_entity_name(Some(sb("someone"))),
                                ])
                                .with_ops(vec![alter_client_quotas_request::OpData::default()
                                    .with_key(sb("producer_byte_rate"))
                                    .with_value(1e6)]),
                        ]),
                        1,
                    )
                    .await
                    .unwrap();
                r.entries[0].error_code
            }),
        ),
        (
            "ElectLeaders",
            "--operation Alter --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &ElectLeadersRequest::default()
                            .with_topic_partitions(None)
                            .with_timeout_ms(5000),
                        2,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "UpdateFeatures",
            "--operation Alter --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &UpdateFeaturesRequest::default()
                            .with_timeout_ms(5000)
                            .with_feature_updates(vec![]),
                        1,
                    )
                    .await
                    .unwrap();
                r.error_code
            }),
        ),
        (
            "DeleteAcls",
            "--operation Alter --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &DeleteAclsRequest::default().with_filters(vec![
                            delete_acls_request::DeleteAclsFilter::default()
                                .with_resource_type_filter(2)
                                .with_resource_name_filter(Some(sb("nothing-here")))
                                .with_pattern_type_filter(3)
                                .with_operation(1)
                                .with_permission_type(1),
                        ]),
                        3,
                    )
                    .await
                    .unwrap();
                r.filter_results[0].error_code
            }),
        ),
        (
            "AlterUserScramCredentials",
            "--operation Alter --cluster",
            call!(|c, _n| {
                let r = c
                    .call(
                        &AlterUserScramCredentialsRequest::default().with_deletions(vec![
                            alter_user_scram_credentials_request::ScramCredentialDeletion::default(
                            )
                            .with_name(sb("nobody"))
                            .with_mechanism(1),
                        ]),
                        0,
                    )
                    .await
                    .unwrap();
                r.results[0].error_code
            }),
        ),
    ]
}

#[test]
fn each_cluster_api_refuses_a_principal_without_its_cluster_acl() {
    let s = start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = Vec::new();
    for (i, (what, grant, call)) in cluster_cases().into_iter().enumerate() {
        let user = format!("ops{i}");
        s.admin_cli(&["user", "create", &user, "--password", "opspw"]);
        let principal = format!("User:{user}");
        let before = rt.block_on(async {
            let mut c = s.client(&user, "opspw").await;
            call(&mut c, "").await
        });
        assert_eq!(before, CLUSTER_AUTH, "{what} by {principal} without ACLs");
        let mut args = vec!["acl", "add", "--principal", &principal];
        args.extend(grant.split(' '));
        s.admin_cli(&args);
        let after = rt.block_on(async {
            let mut c = s.client(&user, "opspw").await;
            call(&mut c, "").await
        });
        assert!(
            ![CLUSTER_AUTH, TOPIC_AUTH, GROUP_AUTH, TXN_AUTH].contains(&after),
            "{what} by {principal} after `{grant}`: error {after}"
        );
        report.push(format!("{what}: {before} -> {after}"));
    }
    println!("{}", report.join("\n"));
}
