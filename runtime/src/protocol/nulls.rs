//! Error messages that say nothing go out as null, as Kafka sends them.
//!
//! kafka-protocol's `Default` fills a nullable `error_message` with `Some("")`, so a handler
//! that starts from `default()` and sets only the error code answered `""` where Kafka's
//! broker answers null (it fills the field from the error's message, null for NONE). Clients
//! tell the two apart: kafkajs' own tests expect `errorMessage: null` from CreateTopics,
//! AlterConfigs, DescribeConfigs and the ACL APIs, and a client that shows any message it is
//! given printed an empty one. Rather than each handler remembering, every answer passes
//! through [`NullMessages`] before it is encoded, and the `answer!` macro in `mod.rs` will not
//! compile for a response type that has no implementation here: a new API has to say whether
//! it carries such a field.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

pub(crate) trait NullMessages {
    /// Turns every empty error message of the answer into null.
    fn null_empty_messages(&mut self) {}
}

fn null(m: &mut Option<StrBytes>) {
    if m.as_ref().is_some_and(|s| s.is_empty()) {
        *m = None;
    }
}

/// Answers with no nullable error message defaulted to `""`.
macro_rules! none {
    ($($t:ty),* $(,)?) => {
        $(impl NullMessages for $t {})*
    };
}

none!(
    MetadataResponse,
    ListOffsetsResponse,
    CreatePartitionsResponse,
    DeleteTopicsResponse,
    DeleteRecordsResponse,
    DescribeClusterResponse,
    OffsetForLeaderEpochResponse,
    DescribeLogDirsResponse,
    InitProducerIdResponse,
    AddPartitionsToTxnResponse,
    AddOffsetsToTxnResponse,
    TxnOffsetCommitResponse,
    EndTxnResponse,
    DescribeTransactionsResponse,
    ListTransactionsResponse,
    DescribeProducersResponse,
    WriteTxnMarkersResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    ListGroupsResponse,
    DescribeGroupsResponse,
    DeleteGroupsResponse,
    OffsetCommitResponse,
    OffsetDeleteResponse,
    OffsetFetchResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupDescribeResponse,
    ShareGroupHeartbeatResponse,
    ShareFetchResponse,
    ShareAcknowledgeResponse,
    SaslHandshakeResponse,
);

/// Each answer whose nullable messages default to `""`: `self` and the paths to its lists.
macro_rules! messages {
    ($($t:ty => |$r:ident| $body:block),* $(,)?) => {
        $(impl NullMessages for $t {
            fn null_empty_messages(&mut self) {
                let $r = self;
                $body
            }
        })*
    };
}

messages!(
    DescribeClientQuotasResponse => |r| {
        null(&mut r.error_message);
    },
    AlterClientQuotasResponse => |r| {
        r.entries.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    AlterConfigsResponse => |r| {
        r.responses.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    IncrementalAlterConfigsResponse => |r| {
        r.responses.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    AlterPartitionReassignmentsResponse => |r| {
        null(&mut r.error_message);
        for t in &mut r.responses {
            t.partitions.iter_mut().for_each(|p| null(&mut p.error_message));
        }
    },
    ListPartitionReassignmentsResponse => |r| {
        null(&mut r.error_message);
    },
    AlterUserScramCredentialsResponse => |r| {
        r.results.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    DescribeUserScramCredentialsResponse => |r| {
        null(&mut r.error_message);
        r.results.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    CreateAclsResponse => |r| {
        r.results.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    DescribeAclsResponse => |r| {
        null(&mut r.error_message);
    },
    DeleteAclsResponse => |r| {
        for f in &mut r.filter_results {
            null(&mut f.error_message);
            f.matching_acls.iter_mut().for_each(|m| null(&mut m.error_message));
        }
    },
    CreateTopicsResponse => |r| {
        r.topics.iter_mut().for_each(|t| null(&mut t.error_message));
    },
    DescribeConfigsResponse => |r| {
        r.results.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    ElectLeadersResponse => |r| {
        for t in &mut r.replica_election_results {
            t.partition_result.iter_mut().for_each(|p| null(&mut p.error_message));
        }
    },
    FindCoordinatorResponse => |r| {
        null(&mut r.error_message);
        r.coordinators.iter_mut().for_each(|c| null(&mut c.error_message));
    },
    UpdateFeaturesResponse => |r| {
        null(&mut r.error_message);
        r.results.iter_mut().for_each(|e| null(&mut e.error_message));
    },
    SaslAuthenticateResponse => |r| {
        null(&mut r.error_message);
    },
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults this module exists for: if kafka-protocol ever defaults these to null,
    /// the module can go.
    #[test]
    fn the_crate_still_defaults_these_messages_to_empty() {
        assert_eq!(
            create_topics_response::CreatableTopicResult::default()
                .error_message
                .as_deref(),
            Some("")
        );
        assert_eq!(
            DescribeAclsResponse::default().error_message.as_deref(),
            Some("")
        );
    }

    #[test]
    fn empty_messages_become_null_and_others_stay() {
        let mut r = DeleteAclsResponse::default().with_filter_results(vec![
            delete_acls_response::DeleteAclsFilterResult::default().with_matching_acls(vec![
                delete_acls_response::DeleteAclsMatchingAcl::default(),
                delete_acls_response::DeleteAclsMatchingAcl::default()
                    .with_error_code(87)
                    .with_error_message(Some(StrBytes::from_static_str("no"))),
            ]),
        ]);
        r.null_empty_messages();
        let f = &r.filter_results[0];
        assert_eq!(f.error_message, None);
        assert_eq!(f.matching_acls[0].error_message, None);
        assert_eq!(f.matching_acls[1].error_message.as_deref(), Some("no"));
    }
}
