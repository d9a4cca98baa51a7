//! DescribeLogDirs: the data directory (the broker's one log dir), each partition's size on
//! disk in it, and (v4) the file system's total and usable bytes, as `kafka-log-dirs` and
//! admin tools show them.

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::{code, sb, Ctx};
use crate::auth::acl::Operation;

pub fn handle(ctx: &Ctx<'_>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let mut resp = DescribeLogDirsResponse::default();
    if !ctx.may_cluster(Operation::Describe) {
        resp.error_code = code(ResponseError::ClusterAuthorizationFailed);
        return resp;
    }
    let b = ctx.broker;
    let dir = &b.config.data_dir;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    // (name, partitions asked; None: all of them). Unknown topics and partitions are left
    // out, as Kafka does.
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => b.topics().iter().map(|t| (t.name.clone(), None)).collect(),
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.topic.0.to_string(), Some(t.partitions)))
            .collect(),
    };
    let mut result = DescribeLogDirsResult::default().with_log_dir(sb(dir.display().to_string()));
    for (name, partitions) in wanted {
        let Some(topic) = b.topic(&name) else {
            continue;
        };
        let indexes: Vec<i32> = match partitions {
            Some(ps) => ps,
            None => (0..topic.partitions.len() as i32).collect(),
        };
        let parts: Vec<DescribeLogDirsPartition> = indexes
            .into_iter()
            .filter_map(|i| {
                let p = topic.partition(i)?;
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(i)
                        .with_partition_size(i64::try_from(p.size_bytes()).unwrap_or(i64::MAX)),
                )
            })
            .collect();
        if !parts.is_empty() {
            result.topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(sb(name)))
                    .with_partitions(parts),
            );
        }
    }
    // -1: unknown, as the protocol defines it for a broker that cannot tell.
    let (total, usable) = disk_space(&dir).unwrap_or((-1, -1));
    result.total_bytes = total;
    result.usable_bytes = usable;
    resp.results.push(result);
    resp
}

/// The file system's size and the bytes an unprivileged writer may still use.
fn disk_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is written by statvfs before it is
    // read (only on success).
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let frag = st.f_frsize as i64;
    Some((
        (st.f_blocks as i64).saturating_mul(frag),
        (st.f_bavail as i64).saturating_mul(frag),
    ))
}
