//! The group coordinator: consumer groups (classic protocol) and their committed offsets.
//!
//! [`state`] holds the rules as a pure state machine; this module is its async shell: it parks
//! JoinGroup/SyncGroup requests on oneshot channels, delivers the replies the state machine
//! hands back, runs the clock ([`Coordinator::tick`]) and owns the [`offsets`] store.

pub mod configs;
pub mod consumer;
pub mod offsets;
pub mod share;
pub mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::broker::now_ms;
use crate::log::LogError;
use consumer::{ConsumerGroup, Heartbeat, HeartbeatReply, TopicInfo};
use offsets::{Committed, OffsetStore};
use state::{err, Group, GroupConfig, JoinOutcome, JoinRequest, Reply, State, SyncOutcome, Waiter};

/// Offsets of a group that has been empty this long are deleted (Kafka's
/// `offsets.retention.minutes`, 7 days).
pub const OFFSETS_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const KAFKA_STORAGE_ERROR: i16 = 56;

enum Parked {
    Join(oneshot::Sender<JoinOutcome>),
    Sync(oneshot::Sender<SyncOutcome>),
}

/// New groups refused by `max_groups`, for `/metrics`.
pub static GROUPS_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Groups forgotten by the cleanup (no members, no committed offsets), for `/metrics`.
pub static GROUPS_EXPIRED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static GROUPS_LAST_LOG_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

struct Inner {
    groups: HashMap<String, Group>,
    /// Groups under the KIP-848 protocol; a group id lives in one map or the other.
    consumer_groups: HashMap<String, ConsumerGroup>,
    next_consumer_member: u64,
    parked: HashMap<Waiter, Parked>,
    next_waiter: Waiter,
    offsets: OffsetStore,
}

impl Inner {
    /// Whether `group_id` exists or one more group fits under `max` (see `GroupConfig`).
    fn room_for(&self, group_id: &str, max: usize) -> bool {
        if self.groups.contains_key(group_id) || self.consumer_groups.contains_key(group_id) {
            return true;
        }
        let room = self.groups.len() + self.consumer_groups.len() < max;
        if !room {
            let n = GROUPS_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if crate::limits::log_due(&GROUPS_LAST_LOG_MS) {
                tracing::warn!(
                    group = group_id,
                    max,
                    refused_so_far = n,
                    setting = "max_groups",
                    "a new group refused: the coordinator holds as many as it may"
                );
            }
        }
        room
    }

    fn park(&mut self, p: Parked) -> Waiter {
        self.next_waiter += 1;
        self.parked.insert(self.next_waiter, p);
        self.next_waiter
    }

    fn deliver(&mut self, replies: Vec<Reply>) {
        for r in replies {
            match r {
                Reply::Join(w, o) => {
                    if let Some(Parked::Join(tx)) = self.parked.remove(&w) {
                        let _ = tx.send(o);
                    }
                }
                Reply::Sync(w, o) => {
                    if let Some(Parked::Sync(tx)) = self.parked.remove(&w) {
                        let _ = tx.send(o);
                    }
                }
            }
        }
    }
}

/// A summary of a group for ListGroups/DescribeGroups.
pub struct GroupView {
    pub id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
    /// For KIP-848 groups: each member's owned partitions by topic id (the classic
    /// `members` assignment bytes are empty for them).
    pub owned: Vec<consumer::Assignment>,
    /// KIP-848's GroupType, as ListGroups v5 names it.
    pub group_type: &'static str,
    /// What ConsumerGroupDescribe reports beyond the classic view: `Some` exactly for
    /// KIP-848 groups.
    pub consumer: Option<ConsumerDetail>,
}

/// A KIP-848 group's epochs and, per member (in `GroupView::members` order), what it
/// subscribed to and what the target assignment gives it.
pub struct ConsumerDetail {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: Vec<ConsumerMemberDetail>,
}

pub struct ConsumerMemberDetail {
    pub epoch: i32,
    pub subscribed_names: Vec<String>,
    pub regex: Option<String>,
    pub target: consumer::Assignment,
}

/// One partition's commit as requested: (topic, partition, offset, leader epoch, metadata).
pub type CommitEntry = (String, i32, i64, i32, String);

/// A share group's members, and (topic id, partition, start offset) per partition.
pub type ShareDetail = (Vec<share::ShareMember>, Vec<(uuid::Uuid, i32, i64)>);

pub struct Coordinator {
    inner: Mutex<Inner>,
    /// Share groups live apart: their traffic (every fetch acquires) must not queue behind
    /// consumer-group work.
    share: Mutex<HashMap<String, share::ShareGroup>>,
    pub config: GroupConfig,
    /// Per-group overrides of `config`, and the file they are kept in (none: in memory only).
    /// Taken after `inner` or alone, never before it.
    overrides: RwLock<configs::GroupConfigs>,
    overrides_writer: Mutex<()>,
    overrides_file: Option<PathBuf>,
}

impl Coordinator {
    /// `durable`: commits are fsynced before they are acknowledged.
    pub fn open(dir: &Path, config: GroupConfig, durable: bool) -> Result<Coordinator, LogError> {
        Ok(Coordinator {
            inner: Mutex::new(Inner {
                groups: HashMap::new(),
                consumer_groups: HashMap::new(),
                next_consumer_member: 0,
                parked: HashMap::new(),
                next_waiter: 0,
                offsets: OffsetStore::open_with(dir, durable)?,
            }),
            share: Mutex::new(HashMap::new()),
            config,
            overrides: RwLock::new(configs::GroupConfigs::default()),
            overrides_writer: Mutex::new(()),
            overrides_file: None,
        })
    }

    /// Keeps per-group configs in `path`, loading those already there.
    pub fn keep_configs_in(
        mut self,
        path: PathBuf,
    ) -> Result<Self, crate::disk::json::JsonFileError> {
        self.overrides = RwLock::new(crate::disk::json::load(&path)?);
        self.overrides_file = Some(path);
        Ok(self)
    }

    /// Runs `f` on `group`'s config values (its overrides over the coordinator's defaults).
    pub fn group_config<R>(&self, group: &str, f: impl FnOnce(&configs::Effective<'_>) -> R) -> R {
        let overrides = self.overrides.read().unwrap_or_else(|p| p.into_inner());
        f(&overrides.effective(group, &self.config))
    }

    /// Changes `group`'s configs (all of `changes` or none), or only checks them.
    pub fn alter_group_config(
        &self,
        group: &str,
        changes: &[(&str, Option<&str>)],
        validate_only: bool,
    ) -> Result<(), configs::AlterError> {
        // Changes queue on their own lock; the one readers share is held only to swap, never
        // over the file's fsync (the clock reads it while holding `inner`, so every join,
        // heartbeat and commit would wait for the disk).
        let _one_change_at_a_time = self
            .overrides_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let current = self
            .overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut next = current.clone();
        next.alter(group, changes, &self.config)?;
        if validate_only || next == current {
            return Ok(());
        }
        if let Some(path) = &self.overrides_file {
            crate::disk::json::store(path, &next)?;
        }
        tracing::info!(group, overrides = ?next.of(group), "group configs changed");
        *self.overrides.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes to the offsets log under the coordinator's lock, then, in durable mode, runs
    /// the fsync after releasing it: commits of every group share the fsync instead of
    /// queueing behind one another's, and heartbeats never wait on the disk.
    fn write_offsets_log(
        &self,
        mut inner: std::sync::MutexGuard<'_, Inner>,
        entries: Vec<(offsets::Key, Option<Committed>)>,
        now: i64,
    ) -> Result<(), crate::log::LogError> {
        let job = inner.offsets.stage(entries, now)?;
        drop(inner);
        match job {
            None => Ok(()),
            Some(job) => {
                let outcome = job.run();
                self.lock().offsets.settle(&job, outcome)
            }
        }
    }

    pub async fn join(&self, group_id: &str, req: JoinRequest) -> JoinOutcome {
        let (tx, rx) = oneshot::channel();
        let member = req.member_id.clone();
        {
            let mut inner = self.lock();
            if inner
                .consumer_groups
                .get(group_id)
                .is_some_and(|g| !g.members.is_empty())
            {
                let mut o = JoinOutcome::error_outcome(err::INCONSISTENT_GROUP_PROTOCOL, &member);
                o.generation = -1;
                return o;
            }
            if !inner.room_for(group_id, self.config.max_groups) {
                let mut o = JoinOutcome::error_outcome(COORDINATOR_NOT_AVAILABLE, &member);
                o.generation = -1;
                return o;
            }
            let w = inner.park(Parked::Join(tx));
            let now = now_ms();
            let g = inner
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now));
            let replies = g.join(req, w, now, &self.config);
            inner.deliver(replies);
        }
        rx.await.unwrap_or(JoinOutcome {
            error: COORDINATOR_NOT_AVAILABLE,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member,
            members: Vec::new(),
            skip_assignment: false,
            previous_leader_id: None,
        })
    }

    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            let w = inner.park(Parked::Sync(tx));
            let now = now_ms();
            let replies = match inner.groups.get_mut(group_id) {
                Some(g) => g.sync(member_id, instance_id, generation, assignments, w, now),
                None => vec![Reply::Sync(
                    w,
                    SyncOutcome {
                        error: err::UNKNOWN_MEMBER_ID,
                        protocol_type: None,
                        protocol_name: None,
                        assignment: Bytes::new(),
                    },
                )],
            };
            inner.deliver(replies);
        }
        rx.await.unwrap_or(SyncOutcome {
            error: COORDINATOR_NOT_AVAILABLE,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        })
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        let mut inner = self.lock();
        match inner.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, instance_id, generation, now_ms()),
            None => err::UNKNOWN_MEMBER_ID,
        }
    }

    pub fn leave(&self, group_id: &str, who: &[(String, Option<String>)]) -> Result<Vec<i16>, i16> {
        let mut inner = self.lock();
        let Some(g) = inner.groups.get_mut(group_id) else {
            return Err(err::UNKNOWN_MEMBER_ID);
        };
        let (codes, replies) = g.leave(who, now_ms());
        inner.deliver(replies);
        Ok(codes)
    }

    /// Runs the clock: session expiry and join-phase deadlines. `topics` is asked for only
    /// when a KIP-848 group needs to recompute assignments.
    pub fn tick(&self, topics: impl FnOnce() -> TopicInfo) {
        let mut inner = self.lock();
        let now = now_ms();
        let mut replies = Vec::new();
        for g in inner.groups.values_mut() {
            replies.extend(g.tick(now));
        }
        inner.deliver(replies);
        if !inner.consumer_groups.is_empty() {
            let info = topics();
            let overrides = self.overrides.read().unwrap_or_else(|p| p.into_inner());
            for (id, g) in inner.consumer_groups.iter_mut() {
                let session = overrides.effective(id, &self.config).session_timeout_ms();
                g.tick(&info, now, session);
            }
        }
        drop(inner);
        let mut shares = self.share.lock().unwrap_or_else(|p| p.into_inner());
        for (id, g) in shares.iter_mut() {
            for m in g.tick(now) {
                tracing::info!(group = %id, member = %m, "share group member expired");
            }
        }
    }

    /// Runs `f` on share group `id` (created if new) under the share lock.
    pub fn with_share<R>(&self, id: &str, f: impl FnOnce(&mut share::ShareGroup) -> R) -> R {
        let mut groups = self.share.lock().unwrap_or_else(|p| p.into_inner());
        f(groups.entry(id.to_string()).or_default())
    }

    /// A share group's members and the start offset of each partition it has touched, or
    /// `None` if it does not exist. Read-only: unlike [`Self::with_share`] it creates nothing.
    pub fn share_detail(&self, id: &str) -> Option<ShareDetail> {
        let groups = self.share.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.get(id)?;
        let mut parts: Vec<(uuid::Uuid, i32, i64)> = g
            .partitions
            .iter()
            .map(|(&(t, p), sp)| (t, p, sp.spso))
            .collect();
        parts.sort();
        Some((g.members.values().cloned().collect(), parts))
    }

    /// Key under which a share group's start offsets are kept in the offsets log; the NUL
    /// bytes keep it apart from every consumer group id a client can list.
    fn share_key(group: &str) -> String {
        format!("\u{0}share\u{0}{group}")
    }

    /// The persisted share-partition start offset of `group` on a partition, if any.
    pub fn share_start(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.lock()
            .offsets
            .get(&Self::share_key(group), topic, partition)
            .map(|c| c.offset)
    }

    /// Persists a share-partition start offset: after a restart the group resumes there, so
    /// a record is never lost for it (records past it may be delivered again).
    pub fn persist_share_start(&self, group: &str, topic: &str, partition: i32, spso: i64) {
        let key = Self::share_key(group);
        let now = now_ms();
        let entry = (
            (key, topic.to_string(), partition),
            Some(Committed {
                offset: spso,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms: now,
            }),
        );
        if let Err(e) = self.write_offsets_log(self.lock(), vec![entry], now) {
            tracing::error!(group, topic, partition, error = %e, "cannot persist share-partition start offset");
        }
    }

    /// Whether `id` is a share group with `member` in it.
    pub fn share_member_known(&self, id: &str, member: &str) -> bool {
        let groups = self.share.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .get(id)
            .is_some_and(|g| g.members.contains_key(member))
    }

    /// A KIP-848 ConsumerGroupHeartbeat.
    pub fn consumer_heartbeat(
        &self,
        hb: Heartbeat,
        topics: &TopicInfo,
        describable: consumer::Describable<'_>,
    ) -> HeartbeatReply {
        let mut inner = self.lock();
        let now = now_ms();
        if inner
            .groups
            .get(&hb.group_id)
            .is_some_and(|g| !g.members.is_empty())
        {
            return HeartbeatReply {
                error: err::INCONSISTENT_GROUP_PROTOCOL,
                message: Some("the group is in use by classic-protocol consumers".into()),
                member_id: hb.member_id,
                member_epoch: -1,
                assignment: None,
            };
        }
        if !inner.room_for(&hb.group_id, self.config.max_groups) {
            return HeartbeatReply {
                error: COORDINATOR_NOT_AVAILABLE,
                message: Some("the coordinator holds as many groups as it may (max_groups)".into()),
                member_id: hb.member_id,
                member_epoch: -1,
                assignment: None,
            };
        }
        inner.next_consumer_member += 1;
        let n = inner.next_consumer_member;
        let gid = hb.group_id.clone();
        let g = inner
            .consumer_groups
            .entry(gid.clone())
            .or_insert_with(|| ConsumerGroup::new(&gid, now));
        g.heartbeat(
            hb,
            topics,
            now,
            || uuid::Uuid::new_v4().simple().to_string() + &format!("-{n}"),
            describable,
        )
    }

    /// One pass of the log cleaner over the offsets log, if one is due: the coordinator's
    /// lock is held only to plan it and to swap its segments in.
    pub fn compact_offsets(&self) {
        let now = now_ms();
        if let Err(e) = crate::log::kv::compact_with(
            || self.lock().offsets.table().compaction(now),
            |c| self.lock().offsets.table().finish_compaction(c),
        ) {
            tracing::warn!(error = %e, "compaction of the offsets log failed");
        }
    }

    /// Deletes the offsets of groups that have been empty past the retention period, and
    /// forgets groups with neither members nor offsets (as Kafka's offsets cleanup does):
    /// otherwise every group id a client ever named, even in a refused heartbeat, would stay
    /// in memory for good.
    pub fn expire_offsets(&self) {
        self.expire_committed();
        let mut inner = self.lock();
        let with_offsets: std::collections::HashSet<String> =
            inner.offsets.groups().into_iter().collect();
        let before = inner.groups.len() + inner.consumer_groups.len();
        inner
            .groups
            .retain(|id, g| !g.is_idle() || with_offsets.contains(id));
        inner
            .consumer_groups
            .retain(|id, g| !g.members.is_empty() || with_offsets.contains(id));
        let forgotten = before - inner.groups.len() - inner.consumer_groups.len();
        if forgotten > 0 {
            GROUPS_EXPIRED.fetch_add(forgotten as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(groups = forgotten, "forgot empty groups without offsets");
        }
    }

    fn expire_committed(&self) {
        let mut inner = self.lock();
        let now = now_ms();
        let mut expired = Vec::new();
        for group in inner.offsets.groups() {
            if inner
                .consumer_groups
                .get(&group)
                .is_some_and(|g| !g.members.is_empty())
            {
                continue;
            }
            let idle_since = match inner.groups.get(&group) {
                Some(g) if g.state != State::Empty => continue,
                Some(g) => g.empty_since_ms,
                None => inner
                    .offsets
                    .group(&group)
                    .iter()
                    .map(|(_, _, c)| c.commit_ms)
                    .max()
                    .unwrap_or(0),
            };
            if now - idle_since > OFFSETS_RETENTION_MS {
                let tombstones = inner.offsets.group_deletion(&group);
                tracing::info!(group = %group, offsets = tombstones.len(), "expiring offsets of an empty group");
                expired.extend(tombstones);
                inner.groups.remove(&group);
            }
        }
        // One write for every expired group, its fsync (durable mode) after the lock.
        if let Err(e) = self.write_offsets_log(inner, expired, now) {
            tracing::warn!(error = %e, "offset expiry failed");
        }
    }

    /// Validates and stores a commit. Returns one error code for the whole request if the
    /// member may not commit, else writes every entry.
    pub fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        entries: Vec<CommitEntry>,
    ) -> i16 {
        let mut inner = self.lock();
        let now = now_ms();
        if !inner.room_for(group_id, self.config.max_groups) {
            return COORDINATOR_NOT_AVAILABLE;
        }
        let code = Self::check_commit(&mut inner, group_id, member_id, generation, now);
        if code != err::NONE {
            return code;
        }
        self.write_commits(inner, group_id, entries, now)
    }

    /// KIP-447: whether a transactional producer may stage offsets for `group_id` on behalf
    /// of this member.
    ///
    /// As Kafka's coordinator: a commit with neither member nor generation (a producer that
    /// sends no group metadata, the old `sendOffsetsToTransaction(offsets, groupId)`) passes
    /// into a classic group whatever its state, but not into a KIP-848 group with members. A
    /// member id with generation -1 is checked like any other: librdkafka sends that after
    /// its member lost the generation, which is what a zombie looks like.
    pub fn check_txn_commit(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let mut inner = self.lock();
        let consumer_active = inner
            .consumer_groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty());
        if generation < 0 && member_id.is_empty() && !consumer_active {
            return err::NONE;
        }
        match Self::check_commit(&mut inner, group_id, member_id, generation, now_ms()) {
            // Kafka answers a transactional commit's stale member epoch with
            // ILLEGAL_GENERATION, which transactional clients abort on; the Java producer
            // takes any code it does not expect there (STALE_MEMBER_EPOCH) as fatal.
            consumer::err::STALE_MEMBER_EPOCH => err::ILLEGAL_GENERATION,
            e => e,
        }
    }

    /// Stores offsets without a membership check: a committed transaction's, checked when
    /// they were staged.
    pub fn write_offsets(&self, group_id: &str, entries: Vec<CommitEntry>) -> i16 {
        self.write_commits(self.lock(), group_id, entries, now_ms())
    }

    fn check_commit(
        inner: &mut Inner,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: i64,
    ) -> i16 {
        let consumer_active = inner
            .consumer_groups
            .get(group_id)
            .filter(|g| !g.members.is_empty());
        if let Some(cg) = consumer_active {
            if let Err(e) = cg.check_commit(member_id, generation) {
                return e;
            }
            return err::NONE;
        }
        let g = inner
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, now));
        if generation < 0 {
            // A standalone or admin commit: only while no member is active.
            if g.state != State::Empty {
                return err::UNKNOWN_MEMBER_ID;
            }
        } else {
            if !g.members.contains_key(member_id) {
                return err::UNKNOWN_MEMBER_ID;
            }
            if generation != g.generation {
                return err::ILLEGAL_GENERATION;
            }
            if g.state == State::CompletingRebalance {
                return err::REBALANCE_IN_PROGRESS;
            }
        }
        err::NONE
    }

    fn write_commits(
        &self,
        inner: std::sync::MutexGuard<'_, Inner>,
        group_id: &str,
        entries: Vec<CommitEntry>,
        now: i64,
    ) -> i16 {
        let writes = entries
            .into_iter()
            .map(|(t, p, offset, leader_epoch, metadata)| {
                (
                    (group_id.to_string(), t, p),
                    Some(Committed {
                        offset,
                        leader_epoch,
                        metadata,
                        commit_ms: now,
                    }),
                )
            })
            .collect();
        match self.write_offsets_log(inner, writes, now) {
            Ok(()) => err::NONE,
            Err(e) => {
                tracing::error!(group = group_id, error = %e, "cannot persist committed offsets");
                KAFKA_STORAGE_ERROR
            }
        }
    }

    pub fn committed(&self, group_id: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.lock().offsets.get(group_id, topic, partition).cloned()
    }

    pub fn committed_all(&self, group_id: &str) -> Vec<(String, i32, Committed)> {
        self.lock().offsets.group(group_id)
    }

    fn view(g: &Group) -> GroupView {
        let protocol = g.protocol.clone().unwrap_or_default();
        GroupView {
            id: g.id.clone(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
            protocol: protocol.clone(),
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        m.metadata_for(&protocol),
                        m.assignment.clone(),
                    )
                })
                .collect(),
            owned: Vec::new(),
            group_type: "classic",
            consumer: None,
        }
    }

    /// A group known only by its committed offsets.
    fn empty_view(id: String) -> GroupView {
        GroupView {
            id,
            state: "Empty",
            protocol_type: "consumer".into(),
            protocol: String::new(),
            members: Vec::new(),
            owned: Vec::new(),
            group_type: "classic",
            consumer: None,
        }
    }

    fn consumer_view(g: &ConsumerGroup) -> GroupView {
        GroupView {
            id: g.id.clone(),
            state: g.state(),
            protocol_type: "consumer".into(),
            protocol: "uniform".into(),
            members: g
                .members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        Bytes::new(),
                        Bytes::new(),
                    )
                })
                .collect(),
            owned: g.members.values().map(|m| m.owned.clone()).collect(),
            group_type: "consumer",
            consumer: Some(ConsumerDetail {
                group_epoch: g.epoch,
                assignment_epoch: g.assignment_epoch(),
                members: g
                    .members
                    .values()
                    .map(|m| ConsumerMemberDetail {
                        epoch: m.epoch,
                        subscribed_names: m.subscribed_names().to_vec(),
                        regex: m.regex.as_ref().map(|(r, _)| r.clone()),
                        target: g.target_of(&m.id),
                    })
                    .collect(),
            }),
        }
    }

    /// Share groups are listed (ListGroups v5 with type "share") but described elsewhere.
    fn share_view(id: &str, g: &share::ShareGroup) -> GroupView {
        GroupView {
            id: id.to_string(),
            state: if g.members.is_empty() {
                "Empty"
            } else {
                "Stable"
            },
            protocol_type: "share".into(),
            protocol: String::new(),
            members: Vec::new(),
            owned: Vec::new(),
            group_type: "share",
            consumer: None,
        }
    }

    pub fn list(&self) -> Vec<GroupView> {
        let inner = self.lock();
        let mut out: Vec<GroupView> = inner.groups.values().map(Self::view).collect();
        out.extend(inner.consumer_groups.values().map(Self::consumer_view));
        for g in inner.offsets.groups() {
            if g.starts_with('\u{0}') {
                continue;
            }
            if !inner.groups.contains_key(&g) && !inner.consumer_groups.contains_key(&g) {
                out.push(Self::empty_view(g));
            }
        }
        drop(inner);
        let shares = self.share.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(shares.iter().map(|(id, g)| Self::share_view(id, g)));
        drop(shares);
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let inner = self.lock();
        if let Some(g) = inner.consumer_groups.get(group_id) {
            return Some(Self::consumer_view(g));
        }
        match inner.groups.get(group_id) {
            Some(g) => Some(Self::view(g)),
            None if !inner.offsets.group(group_id).is_empty() => {
                Some(Self::empty_view(group_id.to_string()))
            }
            None => None,
        }
    }

    /// OffsetDelete: drops the committed offsets of `partitions` unless a live member is
    /// subscribed to their topic. Returns a group-level error, or one code per partition.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
        let inner = self.lock();
        let known = inner.groups.contains_key(group_id)
            || inner.consumer_groups.contains_key(group_id)
            || !inner.offsets.group(group_id).is_empty();
        if !known {
            return Err(GROUP_ID_NOT_FOUND);
        }
        let mut subscribed: Vec<String> = Vec::new();
        if let Some(g) = inner.consumer_groups.get(group_id) {
            for m in g.members.values() {
                subscribed.extend(m.subscribed.iter().cloned());
            }
        }
        if let Some(g) = inner.groups.get(group_id) {
            let protocol = g.protocol.clone().unwrap_or_default();
            for m in g.members.values() {
                subscribed.extend(state::subscribed_topics(&m.metadata_for(&protocol)));
            }
        }
        let now = now_ms();
        let mut codes = Vec::with_capacity(partitions.len());
        let mut writes = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                codes.push(GROUP_SUBSCRIBED_TO_TOPIC);
            } else {
                codes.push(err::NONE);
                writes.push(((group_id.to_string(), t.clone(), *p), None));
            }
        }
        if let Err(e) = self.write_offsets_log(inner, writes, now) {
            tracing::error!(group = group_id, error = %e, "cannot delete offsets");
            return Err(KAFKA_STORAGE_ERROR);
        }
        Ok(codes)
    }

    /// A deleted topic takes every group's committed offsets of it along (Kafka's
    /// `onPartitionsDeleted`), so a topic created again under its name starts without them.
    pub fn forget_topic(&self, topic: &str) {
        let inner = self.lock();
        let tombstones = inner.offsets.topic_deletion(topic);
        self.forget(inner, tombstones, topic);
    }

    /// At start-up: offsets of topics that no longer exist. A deletion forgets its topic's
    /// offsets only after its rename, and a commit may land between a deletion's check and
    /// its end; a crash or that race leaves offsets behind, which a topic created again
    /// under the name would inherit.
    pub fn forget_missing_topics(&self, exists: impl Fn(&str) -> bool) {
        let inner = self.lock();
        let tombstones = inner.offsets.orphans(exists);
        let topics: std::collections::BTreeSet<&str> =
            tombstones.iter().map(|((_, t, _), _)| t.as_str()).collect();
        let topics = topics.into_iter().collect::<Vec<_>>().join(",");
        self.forget(inner, tombstones, &topics);
    }

    fn forget(
        &self,
        inner: std::sync::MutexGuard<'_, Inner>,
        tombstones: Vec<(offsets::Key, Option<Committed>)>,
        topic: &str,
    ) {
        if tombstones.is_empty() {
            return;
        }
        let n = tombstones.len();
        match self.write_offsets_log(inner, tombstones, now_ms()) {
            Ok(()) => tracing::info!(
                topic,
                offsets = n,
                "committed offsets of a deleted topic removed"
            ),
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot remove the offsets of a deleted topic")
            }
        }
    }

    pub fn delete(&self, group_id: &str) -> i16 {
        let mut inner = self.lock();
        let known =
            inner.groups.contains_key(group_id) || !inner.offsets.group(group_id).is_empty();
        if !known {
            return GROUP_ID_NOT_FOUND;
        }
        if inner
            .groups
            .get(group_id)
            .is_some_and(|g| g.state != State::Empty)
        {
            return NON_EMPTY_GROUP;
        }
        inner.groups.remove(group_id);
        inner.consumer_groups.remove(group_id);
        let tombstones = inner.offsets.group_deletion(group_id);
        if let Err(e) = self.write_offsets_log(inner, tombstones, now_ms()) {
            tracing::error!(group = group_id, error = %e, "cannot delete group offsets");
            return KAFKA_STORAGE_ERROR;
        }
        err::NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `max_groups`: the groups that exist keep working, a new one is refused with a code
    /// clients retry, and room comes back when a group goes.
    #[tokio::test]
    async fn new_groups_beyond_max_groups_are_refused_until_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        let config = GroupConfig {
            max_groups: 3,
            ..GroupConfig::default()
        };
        let c = Coordinator::open(dir.path(), config, false).unwrap();
        let commit = |g: &str| c.commit(g, "", -1, vec![("t".into(), 0, 5, -1, String::new())]);
        for g in ["a", "b", "c"] {
            assert_eq!(commit(g), err::NONE);
        }
        assert_eq!(commit("d"), COORDINATOR_NOT_AVAILABLE);
        assert_eq!(commit("a"), err::NONE, "an existing group still commits");
        let join = c
            .join(
                "e",
                JoinRequest {
                    member_id: String::new(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 10_000,
                    protocol_type: "consumer".into(),
                    protocols: vec![("range".into(), Bytes::from_static(b"m"))],
                    require_known_member_id: true,
                },
            )
            .await;
        assert_eq!(join.error, COORDINATOR_NOT_AVAILABLE);
        assert_eq!(c.delete("b"), err::NONE);
        assert_eq!(commit("d"), err::NONE, "room again once a group is deleted");
    }

    /// Transactional commits (KIP-447) are refused to members the group does not know at
    /// that generation, with the codes Kafka gives, and let through without group metadata
    /// only where Kafka lets them.
    #[test]
    fn transactional_commits_are_checked_as_kafka_checks_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = Coordinator::open(dir.path(), GroupConfig::default(), false).unwrap();
        assert_eq!(
            c.check_txn_commit("classic", "", -1),
            err::NONE,
            "no group metadata, a classic (here empty) group"
        );
        let topics = consumer::TopicInfo::from([("t".to_string(), (uuid::Uuid::from_u128(7), 2))]);
        let joined = c.consumer_heartbeat(
            consumer::Heartbeat {
                group_id: "g".into(),
                member_id: "m1".into(),
                member_epoch: 0,
                instance_id: None,
                rebalance_timeout_ms: 1000,
                subscribed: Some(vec!["t".into()]),
                subscribed_regex: None,
                owned: Some(Default::default()),
                client_id: "c".into(),
                client_host: "h".into(),
                principal: "User:ANONYMOUS".into(),
            },
            &topics,
            &|_, _, _| true,
        );
        assert_eq!(joined.error, err::NONE);
        let epoch = joined.member_epoch;
        assert!(epoch > 0);
        assert_eq!(c.check_txn_commit("g", "m1", epoch), err::NONE);
        assert_eq!(
            c.check_txn_commit("g", "m1", epoch + 5),
            err::ILLEGAL_GENERATION,
            "a stale epoch is answered as Kafka answers a transactional commit"
        );
        assert_eq!(
            c.check_txn_commit("g", "m1", -1),
            err::ILLEGAL_GENERATION,
            "a member that lost its generation"
        );
        assert_eq!(
            c.check_txn_commit("g", "", -1),
            err::UNKNOWN_MEMBER_ID,
            "no group metadata, a KIP-848 group with members"
        );
        assert_eq!(c.check_txn_commit("g", "m2", epoch), err::UNKNOWN_MEMBER_ID);
    }

    /// Group ids named once (even in a refused heartbeat) do not stay in memory: the periodic
    /// cleanup forgets groups with no members and no offsets, and keeps the others.
    #[test]
    fn empty_groups_without_offsets_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let c = Coordinator::open(dir.path(), GroupConfig::default(), false).unwrap();
        for i in 0..100 {
            let r = c.consumer_heartbeat(
                consumer::Heartbeat {
                    group_id: format!("junk-{i}"),
                    member_id: "nobody".into(),
                    member_epoch: 7,
                    instance_id: None,
                    rebalance_timeout_ms: 1000,
                    subscribed: None,
                    subscribed_regex: None,
                    owned: None,
                    client_id: "c".into(),
                    client_host: "h".into(),
                    principal: "User:ANONYMOUS".into(),
                },
                &consumer::TopicInfo::new(),
                &|_, _, _| true,
            );
            assert_ne!(r.error, err::NONE, "an unknown member is refused");
        }
        assert_eq!(
            c.commit("kept", "", -1, vec![("t".into(), 0, 5, -1, String::new())]),
            err::NONE
        );
        assert_eq!(c.list().len(), 101);
        let expired = || GROUPS_EXPIRED.load(std::sync::atomic::Ordering::Relaxed);
        let before = expired();
        c.expire_offsets();
        assert!(
            expired() >= before + 100,
            "counted in sluice_groups_expired_total"
        );
        let left: Vec<String> = c.list().into_iter().map(|g| g.id).collect();
        assert_eq!(left, vec!["kept".to_string()]);
        assert_eq!(c.committed("kept", "t", 0).map(|o| o.offset), Some(5));
    }
}
