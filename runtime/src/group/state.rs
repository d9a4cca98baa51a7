//! One consumer group under the classic rebalance protocol, as a pure state machine.
//!
//! Requests that must wait (JoinGroup until the rebalance completes, SyncGroup until the leader
//! hands out assignments) are parked as opaque [`Waiter`] tokens; every method returns the
//! [`Reply`]s that became due, and the async shell delivers them. Time comes in as `now` (ms),
//! so every rule here is testable without sockets or clocks.
//!
//! States and transitions (Kafka's GroupCoordinator):
//! ```text
//! Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!   ▲                 ▲     ▲                                        │ leader's SyncGroup
//!   │ last member     │     └── member joins/leaves/expires ──── Stable ◀┘
//!   └──── leaves ─────┘
//! ```
//! Invariants: `generation` increases by one each time a join phase completes; a member is
//! answered at most once per parked request; the leader is always a current member.

use std::collections::HashMap;

use bytes::Bytes;
use indexmap::IndexMap;

pub type Waiter = u64;

/// Kafka error codes used by the coordinator.
pub mod err {
    pub const NONE: i16 = 0;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// The topics a classic consumer subscribes to, from its ConsumerProtocolSubscription
/// metadata (empty for other protocol types or undecodable metadata).
pub fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    use bytes::Buf;
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    let mut b = metadata.clone();
    if b.len() < 2 {
        return Vec::new();
    }
    let version = b.get_i16();
    ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3))
        .map(|s| s.topics.into_iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// Broker-wide group settings (Kafka's `group.*` configs).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long a first rebalance waits for more members.
    pub initial_rebalance_delay_ms: i64,
    /// `share.auto.offset.reset`: whether a share group new to a partition starts at its
    /// earliest record (true) or, as Kafka does by default, at its end.
    pub share_from_earliest: bool,
    /// `max_groups`: classic and KIP-848 groups the coordinator keeps at most (members or
    /// committed offsets keep a group; see `limits`). A request that would make one more
    /// gets COORDINATOR_NOT_AVAILABLE, which clients retry.
    pub max_groups: usize,
    /// KIP-848 groups: `group.consumer.session.timeout.ms` and
    /// `group.consumer.heartbeat.interval.ms`.
    pub consumer_session_timeout_ms: i64,
    pub consumer_heartbeat_interval_ms: i32,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            share_from_earliest: false,
            max_groups: 100_000,
            consumer_session_timeout_ms: super::consumer::SESSION_TIMEOUT_MS,
            consumer_heartbeat_interval_ms: super::consumer::HEARTBEAT_INTERVAL_MS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat_ms: i64,
    join_waiter: Option<Waiter>,
    sync_waiter: Option<Waiter>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata): filled for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader that restarted into a stable group keeps the current assignment: v9+
    /// clients are told to skip assigning, older ones are named a leader that is no longer
    /// them (its previous id), so they simply sync.
    pub skip_assignment: bool,
    pub previous_leader_id: Option<String>,
}

impl JoinOutcome {
    pub fn error_outcome(error: i16, member_id: &str) -> JoinOutcome {
        Self::error(error, member_id)
    }

    fn error(error: i16, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error,
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
            previous_leader_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(Waiter, JoinOutcome),
    Sync(Waiter, SyncOutcome),
}

pub struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ (KIP-394): a new member must first get an id, then rejoin with it.
    pub require_known_member_id: bool,
}

pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Insertion-ordered, so the first member to join leads when there is no leader.
    pub members: IndexMap<String, Member>,
    /// Member ids handed out by MEMBER_ID_REQUIRED and not yet used: id → expiry.
    pending: HashMap<String, i64>,
    statics: HashMap<String, String>,
    /// When the join phase gives up on members that have not rejoined.
    rebalance_deadline: i64,
    /// While set, a first rebalance keeps waiting for more members.
    initial_delay_until: Option<i64>,
    rebalance_started: i64,
    /// When the group last became empty (for offset retention).
    pub empty_since_ms: i64,
    next_member: u64,
}

impl Group {
    /// No members, none half-joined (KIP-394's second JoinGroup) and no static member
    /// mapping: nothing would notice the group being forgotten.
    pub fn is_idle(&self) -> bool {
        self.state == State::Empty && self.pending.is_empty() && self.statics.is_empty()
    }

    pub fn new(id: &str, now: i64) -> Group {
        Group {
            id: id.to_string(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_deadline: 0,
            initial_delay_until: None,
            rebalance_started: now,
            empty_since_ms: now,
            next_member: 0,
        }
    }

    fn new_member_id(&mut self, client_id: &str, now: i64) -> String {
        self.next_member += 1;
        format!("{client_id}-{now:x}-{}", self.next_member)
    }

    /// A JoinGroup answer that hands back the current generation, starting no rebalance.
    fn current_generation(&self, member_id: String) -> JoinOutcome {
        JoinOutcome {
            error: err::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id,
            members: Vec::new(),
            skip_assignment: false,
            previous_leader_id: None,
        }
    }

    fn sync_outcome(&self, error: i16, assignment: Bytes) -> SyncOutcome {
        SyncOutcome {
            error,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    /// Protocols every member supports, in the first member's order.
    fn common_protocols(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut common: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            common.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        common
    }

    fn choose_protocol(&self) -> Option<String> {
        let candidates = self.common_protocols();
        let mut votes: IndexMap<&str, usize> = candidates.iter().map(|c| (c.as_str(), 0)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                if let Some(v) = votes.get_mut(n.as_str()) {
                    *v += 1;
                }
            }
        }
        // Most votes wins; ties go to the earlier candidate.
        let mut best: Option<(&str, usize)> = None;
        for (c, v) in votes {
            if best.is_none_or(|(_, bv)| v > bv) {
                best = Some((c, v));
            }
        }
        best.map(|(c, _)| c.to_string())
    }

    fn start_rebalance(&mut self, now: i64, out: &mut Vec<Reply>) {
        if self.state == State::CompletingRebalance {
            // Members waiting for assignments of a generation that will not be: tell them.
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    out.push(Reply::Sync(
                        w,
                        SyncOutcome {
                            error: err::REBALANCE_IN_PROGRESS,
                            protocol_type: None,
                            protocol_name: None,
                            assignment: Bytes::new(),
                        },
                    ));
                }
            }
        }
        let was_empty = self.state == State::Empty;
        if self.state != State::PreparingRebalance {
            self.rebalance_started = now;
        }
        self.state = State::PreparingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        self.rebalance_deadline = self.rebalance_started + timeout;
        if was_empty {
            self.initial_delay_until = Some(now);
        }
    }

    fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    /// Ends the join phase if every member has rejoined (and any initial delay has passed), or
    /// if the rebalance timeout has run out.
    fn maybe_complete_join(&mut self, now: i64, out: &mut Vec<Reply>) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let delayed = self.initial_delay_until.is_some_and(|t| now < t);
        let timed_out = now >= self.rebalance_deadline;
        if !(timed_out || (self.all_joined() && !delayed)) {
            return;
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            self.empty_since_ms = now;
            return;
        }
        self.protocol = self.choose_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = State::CompletingRebalance;
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let everyone: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        for m in self.members.values_mut() {
            m.last_heartbeat_ms = now;
            if let Some(w) = m.join_waiter.take() {
                out.push(Reply::Join(
                    w,
                    JoinOutcome {
                        error: err::NONE,
                        generation: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        leader: leader.clone(),
                        member_id: m.id.clone(),
                        members: if m.id == leader {
                            everyone.clone()
                        } else {
                            Vec::new()
                        },
                        skip_assignment: false,
                        previous_leader_id: None,
                    },
                ));
            }
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.shift_remove(id) {
            if let Some(inst) = &m.instance_id {
                if self.statics.get(inst).is_some_and(|x| x == id) {
                    self.statics.remove(inst);
                }
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    pub fn join(
        &mut self,
        req: JoinRequest,
        waiter: Waiter,
        now: i64,
        cfg: &GroupConfig,
    ) -> Vec<Reply> {
        let mut out = Vec::new();
        let reply = |out: &mut Vec<Reply>, e: i16, id: &str| {
            out.push(Reply::Join(waiter, JoinOutcome::error(e, id)))
        };
        if req.session_timeout_ms < cfg.min_session_timeout_ms
            || req.session_timeout_ms > cfg.max_session_timeout_ms
        {
            reply(&mut out, err::INVALID_SESSION_TIMEOUT, &req.member_id);
            return out;
        }
        if req.protocols.is_empty()
            || self
                .protocol_type
                .as_ref()
                .is_some_and(|t| *t != req.protocol_type && !self.members.is_empty())
        {
            reply(&mut out, err::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            return out;
        }
        if !self.members.is_empty() {
            let common = self.common_protocols();
            if !req.protocols.iter().any(|(n, _)| common.contains(n)) {
                reply(&mut out, err::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
                return out;
            }
        }
        let mut member_id = req.member_id.clone();
        if let Some(inst) = req.instance_id.clone() {
            let inst = &inst;
            if let Some(existing) = self.statics.get(inst).cloned() {
                if !member_id.is_empty() && member_id != existing {
                    reply(&mut out, err::FENCED_INSTANCE_ID, &member_id);
                    return out;
                }
                if member_id.is_empty() {
                    // A static member restarting: it takes over its old identity. In a stable
                    // group with the same protocols it keeps its assignment, no rebalance.
                    let new_id = self.new_member_id(&req.client_id, now);
                    let Some(mut m) = self.members.shift_remove(&existing) else {
                        self.statics.remove(inst);
                        return self.join(req, waiter, now, cfg);
                    };
                    let unchanged = m.protocols == req.protocols;
                    m.id = new_id.clone();
                    m.last_heartbeat_ms = now;
                    m.session_timeout_ms = req.session_timeout_ms;
                    m.rebalance_timeout_ms = req.rebalance_timeout_ms;
                    m.protocols = req.protocols.clone();
                    let old_waiter = m.join_waiter.take();
                    let was_leader = self.leader.as_deref() == Some(existing.as_str());
                    self.members.insert(new_id.clone(), m);
                    self.statics.insert(inst.clone(), new_id.clone());
                    if was_leader {
                        self.leader = Some(new_id.clone());
                    }
                    if let Some(w) = old_waiter {
                        out.push(Reply::Join(
                            w,
                            JoinOutcome::error(err::FENCED_INSTANCE_ID, &existing),
                        ));
                    }
                    if self.state == State::Stable && unchanged {
                        let protocol = self.protocol.clone().unwrap_or_default();
                        let members = if was_leader {
                            self.members
                                .values()
                                .map(|m| {
                                    (
                                        m.id.clone(),
                                        m.instance_id.clone(),
                                        m.metadata_for(&protocol),
                                    )
                                })
                                .collect()
                        } else {
                            Vec::new()
                        };
                        out.push(Reply::Join(
                            waiter,
                            JoinOutcome {
                                members,
                                skip_assignment: was_leader,
                                previous_leader_id: was_leader.then(|| existing.clone()),
                                ..self.current_generation(new_id)
                            },
                        ));
                        return out;
                    }
                    member_id = new_id;
                }
            } else if member_id.is_empty() {
                member_id = self.new_member_id(&req.client_id, now);
                self.statics.insert(inst.clone(), member_id.clone());
            }
        } else if member_id.is_empty() {
            let id = self.new_member_id(&req.client_id, now);
            if req.require_known_member_id {
                self.pending
                    .insert(id.clone(), now + i64::from(req.session_timeout_ms));
                reply(&mut out, err::MEMBER_ID_REQUIRED, &id);
                return out;
            }
            member_id = id;
        } else if !self.members.contains_key(&member_id)
            && self.pending.remove(&member_id).is_none()
        {
            reply(&mut out, err::UNKNOWN_MEMBER_ID, &member_id);
            return out;
        }

        let is_new = !self.members.contains_key(&member_id);
        if is_new {
            self.members.insert(
                member_id.clone(),
                Member {
                    id: member_id.clone(),
                    instance_id: req.instance_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    session_timeout_ms: req.session_timeout_ms,
                    rebalance_timeout_ms: req.rebalance_timeout_ms,
                    protocols: req.protocols.clone(),
                    assignment: Bytes::new(),
                    last_heartbeat_ms: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
            if self.members.len() == 1 {
                self.protocol_type = Some(req.protocol_type.clone());
            }
        }
        let leader = self.leader.clone();
        let m = self
            .members
            .get_mut(&member_id)
            .expect("member was just ensured");
        let changed = m.protocols != req.protocols;
        m.protocols = req.protocols;
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.last_heartbeat_ms = now;
        if let Some(w) = m.join_waiter.replace(waiter) {
            // The same member joined twice: the older request gets the newer's outcome later;
            // answer it now so it is not left hanging.
            out.push(Reply::Join(
                w,
                JoinOutcome::error(err::REBALANCE_IN_PROGRESS, &member_id),
            ));
        }
        let is_leader = leader.as_deref() == Some(member_id.as_str());
        match self.state {
            State::Stable if !is_new && !changed && !is_leader => {
                // A follower rejoining a stable group with nothing new: hand back the current
                // generation without disturbing anyone.
                let m = self.members.get_mut(&member_id).expect("member exists");
                m.join_waiter = None;
                out.push(Reply::Join(waiter, self.current_generation(member_id)));
                return out;
            }
            State::PreparingRebalance => {}
            _ => self.start_rebalance(now, &mut out),
        }
        if is_new {
            if let Some(t) = self.initial_delay_until {
                // A first rebalance waits a little longer for each newcomer, within bounds.
                let cap = self
                    .rebalance_deadline
                    .max(self.rebalance_started + cfg.initial_rebalance_delay_ms);
                self.initial_delay_until =
                    Some((now + cfg.initial_rebalance_delay_ms).min(cap).max(t));
            }
            let timeout = i64::from(req.rebalance_timeout_ms);
            self.rebalance_deadline = self
                .rebalance_deadline
                .max(self.rebalance_started + timeout);
        }
        self.maybe_complete_join(now, &mut out);
        out
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        waiter: Waiter,
        now: i64,
    ) -> Vec<Reply> {
        let mut out = Vec::new();
        if let Some(e) = self.check_member(member_id, instance_id) {
            out.push(Reply::Sync(waiter, self.sync_outcome(e, Bytes::new())));
            return out;
        }
        if generation != self.generation {
            out.push(Reply::Sync(
                waiter,
                self.sync_outcome(err::ILLEGAL_GENERATION, Bytes::new()),
            ));
            return out;
        }
        match self.state {
            State::PreparingRebalance | State::Empty => {
                out.push(Reply::Sync(
                    waiter,
                    self.sync_outcome(err::REBALANCE_IN_PROGRESS, Bytes::new()),
                ));
            }
            State::Stable => {
                let a = self
                    .members
                    .get(member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                out.push(Reply::Sync(waiter, self.sync_outcome(err::NONE, a)));
            }
            State::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now;
                    if let Some(old) = m.sync_waiter.replace(waiter) {
                        out.push(Reply::Sync(
                            old,
                            SyncOutcome {
                                error: err::REBALANCE_IN_PROGRESS,
                                protocol_type: None,
                                protocol_name: None,
                                assignment: Bytes::new(),
                            },
                        ));
                    }
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = State::Stable;
                    let replies: Vec<(Waiter, Bytes)> = self
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync_waiter.take().map(|w| (w, m.assignment.clone())))
                        .collect();
                    for (w, a) in replies {
                        out.push(Reply::Sync(w, self.sync_outcome(err::NONE, a)));
                    }
                }
            }
        }
        out
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Option<i16> {
        if let Some(inst) = instance_id {
            match self.statics.get(inst) {
                Some(id) if id != member_id => return Some(err::FENCED_INSTANCE_ID),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Some(err::UNKNOWN_MEMBER_ID);
        }
        None
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: i64,
    ) -> i16 {
        if let Some(e) = self.check_member(member_id, instance_id) {
            return e;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match self.state {
            State::PreparingRebalance => err::REBALANCE_IN_PROGRESS,
            _ if generation != self.generation => err::ILLEGAL_GENERATION,
            _ => err::NONE,
        }
    }

    /// Removes members (by member id, or by instance id for static members). Returns each one's
    /// error code and the replies that became due.
    pub fn leave(&mut self, who: &[(String, Option<String>)], now: i64) -> (Vec<i16>, Vec<Reply>) {
        let mut out = Vec::new();
        let mut codes = Vec::with_capacity(who.len());
        let mut removed = false;
        for (member_id, instance_id) in who {
            let id = match instance_id {
                Some(inst) => match self.statics.get(inst) {
                    Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                    Some(_) => {
                        codes.push(err::FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => {
                        codes.push(err::UNKNOWN_MEMBER_ID);
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            let Some(m) = self.members.get_mut(&id) else {
                codes.push(err::UNKNOWN_MEMBER_ID);
                continue;
            };
            if let Some(w) = m.join_waiter.take() {
                out.push(Reply::Join(
                    w,
                    JoinOutcome::error(err::UNKNOWN_MEMBER_ID, &id),
                ));
            }
            if let Some(w) = m.sync_waiter.take() {
                out.push(Reply::Sync(
                    w,
                    self.sync_outcome(err::UNKNOWN_MEMBER_ID, Bytes::new()),
                ));
            }
            self.remove_member(&id);
            removed = true;
            codes.push(err::NONE);
        }
        if removed {
            self.after_departure(now, &mut out);
        }
        (codes, out)
    }

    fn after_departure(&mut self, now: i64, out: &mut Vec<Reply>) {
        if self.members.is_empty() && self.state != State::PreparingRebalance {
            self.state = State::Empty;
            self.generation += 1;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            self.empty_since_ms = now;
            return;
        }
        match self.state {
            State::Stable | State::CompletingRebalance => self.start_rebalance(now, out),
            State::PreparingRebalance => self.maybe_complete_join(now, out),
            State::Empty => {}
        }
    }

    /// Time passes: expires silent members and pending ids, and completes a join phase whose
    /// members are all in or whose time is up.
    pub fn tick(&mut self, now: i64) -> Vec<Reply> {
        let mut out = Vec::new();
        self.pending.retain(|_, exp| *exp > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now - m.last_heartbeat_ms > i64::from(m.session_timeout_ms)
            })
            .map(|m| m.id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, "member session expired");
                self.remove_member(id);
            }
            self.after_departure(now, &mut out);
        }
        self.maybe_complete_join(now, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        }
    }

    fn join_req(id: &str) -> JoinRequest {
        JoinRequest {
            member_id: id.to_string(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: true,
        }
    }

    fn join_ok(r: &[Reply], w: Waiter) -> JoinOutcome {
        r.iter()
            .find_map(|x| match x {
                Reply::Join(ww, o) if *ww == w => Some(o.clone()),
                _ => None,
            })
            .expect("join reply")
    }

    /// Joins a new member through the two-step KIP-394 handshake; returns its id and replies.
    fn join_new(g: &mut Group, w: Waiter, now: i64) -> (String, Vec<Reply>) {
        let r = g.join(join_req(""), w, now, &cfg());
        let o = join_ok(&r, w);
        assert_eq!(o.error, err::MEMBER_ID_REQUIRED);
        let r = g.join(join_req(&o.member_id), w, now, &cfg());
        (o.member_id, r)
    }

    #[test]
    fn two_members_rebalance_and_sync() {
        let mut g = Group::new("g", 0);
        let (a, r) = join_new(&mut g, 1, 0);
        let oa = join_ok(&r, 1);
        assert_eq!(
            (oa.error, oa.generation, oa.leader.as_str()),
            (0, 1, a.as_str())
        );
        let r = g.sync(
            &a,
            None,
            1,
            vec![(a.clone(), Bytes::from_static(b"A1"))],
            2,
            0,
        );
        assert!(matches!(&r[..], [Reply::Sync(2, o)] if o.assignment == Bytes::from_static(b"A1")));
        assert_eq!(g.state, State::Stable);

        // B joins: a rebalance starts; A learns through its heartbeat and rejoins.
        let (b, r) = join_new(&mut g, 3, 10);
        assert!(r.is_empty(), "B waits for A to rejoin");
        assert_eq!(g.heartbeat(&a, None, 1, 10), err::REBALANCE_IN_PROGRESS);
        let r = g.join(join_req(&a), 4, 20, &cfg());
        let (oa, ob) = (join_ok(&r, 4), join_ok(&r, 3));
        assert_eq!(oa.generation, 2);
        assert_eq!(oa.members.len(), 2, "the leader sees everyone");
        assert!(ob.members.is_empty());
        // Follower syncs first and waits for the leader.
        assert!(g.sync(&b, None, 2, vec![], 5, 21).is_empty());
        let r = g.sync(
            &a,
            None,
            2,
            vec![
                (a.clone(), Bytes::from_static(b"A2")),
                (b.clone(), Bytes::from_static(b"B2")),
            ],
            6,
            22,
        );
        assert_eq!(r.len(), 2);
        assert!(r.contains(&Reply::Sync(
            5,
            SyncOutcome {
                error: 0,
                protocol_type: Some("consumer".into()),
                protocol_name: Some("range".into()),
                assignment: Bytes::from_static(b"B2")
            }
        )));
    }

    #[test]
    fn silent_member_is_evicted_and_the_rest_rebalance() {
        let mut g = Group::new("g", 0);
        let (a, _) = join_new(&mut g, 1, 0);
        g.sync(&a, None, 1, vec![], 2, 0);
        let (b, _) = join_new(&mut g, 3, 0);
        let r = g.join(join_req(&a), 4, 0, &cfg());
        assert_eq!(join_ok(&r, 4).generation, 2);
        g.sync(&a, None, 2, vec![], 5, 0);
        g.sync(&b, None, 2, vec![], 6, 0);
        assert_eq!(g.state, State::Stable);
        // A keeps heartbeating, B goes silent past its 10 s session.
        assert_eq!(g.heartbeat(&a, None, 2, 9_000), 0);
        let r = g.tick(10_500);
        assert!(r.is_empty());
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.state, State::PreparingRebalance);
        let r = g.join(join_req(&a), 7, 10_600, &cfg());
        assert_eq!(join_ok(&r, 7).generation, 3);
    }

    #[test]
    fn last_member_leaving_empties_the_group() {
        let mut g = Group::new("g", 0);
        let (a, _) = join_new(&mut g, 1, 0);
        let (codes, _) = g.leave(&[(a, None)], 5);
        assert_eq!(codes, vec![0]);
        assert_eq!(g.state, State::Empty);
        assert_eq!(g.empty_since_ms, 5);
    }

    #[test]
    fn static_member_restart_keeps_assignment_without_rebalance() {
        let mut g = Group::new("g", 0);
        let mut req = join_req("");
        req.instance_id = Some("i1".into());
        let r = g.join(req, 1, 0, &cfg());
        let a = join_ok(&r, 1).member_id;
        let mut req = join_req("");
        req.instance_id = Some("i2".into());
        let r = g.join(req, 2, 0, &cfg());
        assert!(r.is_empty(), "b waits for a to rejoin");
        let mut req = join_req(&a);
        req.instance_id = Some("i1".into());
        let r = g.join(req, 3, 0, &cfg());
        let b = join_ok(&r, 2).member_id;
        assert_eq!(g.generation, 2);
        g.sync(
            &a,
            Some("i1"),
            2,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
            3,
            0,
        );
        assert_eq!(g.state, State::Stable);
        // b restarts: new member id, same instance, no rebalance.
        let mut req = join_req("");
        req.instance_id = Some("i2".into());
        let r = g.join(req, 4, 100, &cfg());
        let o = join_ok(&r, 4);
        assert_eq!((o.error, o.generation), (0, 2));
        assert_eq!(g.state, State::Stable);
        let r = g.sync(&o.member_id, Some("i2"), 2, vec![], 5, 100);
        assert!(matches!(&r[..], [Reply::Sync(5, s)] if s.assignment == Bytes::from_static(b"B")));
        // The old incarnation is fenced.
        assert_eq!(g.heartbeat(&b, Some("i2"), 2, 100), err::FENCED_INSTANCE_ID);
        // The leader restarts too: still no rebalance; it is told to skip assigning.
        let mut req = join_req("");
        req.instance_id = Some("i1".into());
        let r = g.join(req, 6, 200, &cfg());
        let o = join_ok(&r, 6);
        assert_eq!((o.error, o.generation, o.skip_assignment), (0, 2, true));
        assert_eq!(o.previous_leader_id.as_deref(), Some(a.as_str()));
        assert_eq!(o.leader, o.member_id);
        assert_eq!(g.state, State::Stable);
        let r = g.sync(&o.member_id, Some("i1"), 2, vec![], 7, 200);
        assert!(matches!(&r[..], [Reply::Sync(7, s)] if s.assignment == Bytes::from_static(b"A")));
    }

    #[test]
    fn initial_delay_gathers_members_into_one_generation() {
        let c = GroupConfig::default();
        let mut g = Group::new("g", 0);
        let mut ids = Vec::new();
        for (i, t) in [(1u64, 0i64), (2, 1000), (3, 2000)] {
            let r = g.join(join_req(""), i, t, &c);
            let id = join_ok(&r, i).member_id;
            let r = g.join(join_req(&id), i, t, &c);
            assert!(r.is_empty(), "still inside the initial delay");
            ids.push(id);
        }
        assert!(g.tick(4000).is_empty());
        let r = g.tick(5001);
        assert_eq!(r.len(), 3);
        assert_eq!(g.generation, 1);
    }
}
