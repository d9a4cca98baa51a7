//! Consumer groups under the next-generation protocol (KIP-848, `group.protocol=consumer`):
//! the broker computes assignments and members converge on them through heartbeats. A pure
//! state machine: time and topic metadata come in as arguments.
//!
//! Epochs: the group epoch rises whenever membership, a subscription or the subscribed topics'
//! partition counts change; a new target assignment is computed for that epoch. A member
//! reaches the target epoch once it has given up every partition the target takes from it;
//! until then it is told to keep only the partitions it keeps (a revocation) and its epoch does
//! not move. A partition moving between members is handed to the new owner only after the old
//! owner has reported it gone, so no partition is ever owned twice.
//!
//! Invariant: for every partition, at most one member has it in `owned` (what the broker
//! has told that member it may consume, and not yet seen released).

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;
use uuid::Uuid;

pub mod err {
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_REQUEST: i16 = 42;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNRELEASED_INSTANCE_ID: i16 = 111;
    pub const STALE_MEMBER_EPOCH: i16 = 113;
    pub const INVALID_REGULAR_EXPRESSION: i16 = 130;
}

/// Broker-side session timeout (Kafka's `group.consumer.session.timeout.ms` default; the
/// broker's is in `GroupConfig`).
pub const SESSION_TIMEOUT_MS: i64 = 45_000;
/// Rebalance timeout of a member that never sent one (Kafka's `max.poll.interval.ms` default).
const DEFAULT_REBALANCE_TIMEOUT_MS: i32 = 300_000;
/// How often members are asked to heartbeat (`group.consumer.heartbeat.interval.ms`
/// default).
pub const HEARTBEAT_INTERVAL_MS: i32 = 5_000;

pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// Topic facts the assignor needs: name → (id, partition count).
pub type TopicInfo = BTreeMap<String, (Uuid, i32)>;

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub principal: String,
    pub subscribed: Vec<String>,
    /// Topics subscribed by name (`SubscribedTopicNames`).
    names: Vec<String>,
    /// A regex subscription (KIP-848's `SubscribedTopicRegex`). `subscribed` is `names` plus
    /// the topics it matches, recomputed as topics come and go.
    pub regex: Option<(String, regex::Regex)>,
    /// Set when the regex is new: like Kafka, which resolves regexes in the background, it
    /// takes effect from the member's next heartbeat, after its named topics (clients'
    /// tests expect the named topics' assignment first).
    regex_pending: bool,
    pub rebalance_timeout_ms: i32,
    pub epoch: i32,
    previous_epoch: i32,
    /// Partitions this member may consume (told to it and not yet seen released).
    pub owned: Assignment,
    /// Set while a revocation is outstanding: when it was asked.
    revoking_since: Option<i64>,
    last_heartbeat_ms: i64,
    /// The assignment last sent, to send only changes.
    last_sent: Option<Assignment>,
    /// A static member that left with epoch -2 (a restart): it keeps its partitions for the
    /// session timeout, waiting for its next incarnation.
    left_temporarily: bool,
}

impl Member {
    /// The topics subscribed by name (without those a regex matched).
    pub fn subscribed_names(&self) -> &[String] {
        &self.names
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// None: unchanged since the last heartbeat.
    pub subscribed: Option<Vec<String>>,
    /// None: unchanged since the last heartbeat; Some(""): no regex any more.
    pub subscribed_regex: Option<String>,
    /// None: unchanged since the last heartbeat; else what the member owns now.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// Who the member authenticated as: a regex subscription matches only topics it may
    /// describe.
    pub principal: String,
}

/// Whether a principal (first), connecting from a host (second), may describe a topic
/// (third): what regex subscriptions are filtered by.
pub type Describable<'a> = &'a dyn Fn(&str, &str, &str) -> bool;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    /// Some when the member's assignment changed.
    pub assignment: Option<Assignment>,
}

impl HeartbeatReply {
    fn error(error: i16, member_id: &str, message: &str) -> HeartbeatReply {
        HeartbeatReply {
            error,
            message: Some(message.to_string()),
            member_id: member_id.to_string(),
            member_epoch: -1,
            assignment: None,
        }
    }

    /// The answer to a leave (epoch -1, or -2 for a static member's temporary leave).
    fn left(member_id: String, member_epoch: i32) -> HeartbeatReply {
        HeartbeatReply {
            error: 0,
            message: None,
            member_id,
            member_epoch,
            assignment: None,
        }
    }
}

pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub members: IndexMap<String, Member>,
    target: BTreeMap<String, Assignment>,
    target_epoch: i32,
    /// Partition counts the target was computed from.
    topics_seen: TopicInfo,
    pub empty_since_ms: i64,
}

fn without(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let keep: BTreeSet<i32> = match b.get(t) {
            Some(bs) => ps.difference(bs).copied().collect(),
            None => ps.clone(),
        };
        if !keep.is_empty() {
            out.insert(*t, keep);
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(bs) = b.get(t) {
            let keep: BTreeSet<i32> = ps.intersection(bs).copied().collect();
            if !keep.is_empty() {
                out.insert(*t, keep);
            }
        }
    }
    out
}

impl ConsumerGroup {
    pub fn new(id: &str, now: i64) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_string(),
            epoch: 0,
            members: IndexMap::new(),
            target: BTreeMap::new(),
            target_epoch: 0,
            topics_seen: TopicInfo::new(),
            empty_since_ms: now,
        }
    }

    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self
            .members
            .values()
            .all(|m| m.epoch == self.target_epoch && m.revoking_since.is_none())
        {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// The uniform assignor, sticky: per topic, members subscribed to it keep what they had
    /// up to their fair share; the rest is dealt to those below it.
    fn compute_target(&mut self, topics: &TopicInfo) {
        let mut target: BTreeMap<String, Assignment> = self
            .members
            .keys()
            .map(|m| (m.clone(), Assignment::new()))
            .collect();
        let mut names: BTreeSet<&String> = BTreeSet::new();
        for m in self.members.values() {
            names.extend(m.subscribed.iter());
        }
        for name in names {
            let Some(&(tid, count)) = topics.get(name) else {
                continue;
            };
            let subs: Vec<&String> = self
                .members
                .values()
                .filter(|m| m.subscribed.contains(name))
                .map(|m| &m.id)
                .collect();
            if subs.is_empty() || count <= 0 {
                continue;
            }
            let n = subs.len() as i32;
            let (base, extra) = (count / n, count % n);
            let mut quota: BTreeMap<&String, i32> = subs
                .iter()
                .enumerate()
                .map(|(i, m)| (*m, base + i32::from((i as i32) < extra)))
                .collect();
            let mut free: Vec<i32> = Vec::new();
            for p in 0..count {
                let holder = subs.iter().find(|m| {
                    self.target
                        .get(m.as_str())
                        .and_then(|a| a.get(&tid))
                        .is_some_and(|s| s.contains(&p))
                });
                match holder {
                    Some(m) if quota[*m] > 0 => {
                        *quota.get_mut(*m).expect("subscriber has a quota") -= 1;
                        target
                            .get_mut(m.as_str())
                            .expect("member")
                            .entry(tid)
                            .or_default()
                            .insert(p);
                    }
                    _ => free.push(p),
                }
            }
            let mut free = free.into_iter();
            for m in &subs {
                for _ in 0..quota[*m] {
                    if let Some(p) = free.next() {
                        target
                            .get_mut(m.as_str())
                            .expect("member")
                            .entry(tid)
                            .or_default()
                            .insert(p);
                    }
                }
            }
        }
        self.target = target;
        self.target_epoch = self.epoch;
        self.topics_seen = topics.clone();
    }

    fn bump(&mut self, topics: &TopicInfo) {
        self.epoch += 1;
        self.compute_target(topics);
    }

    /// Partitions of `id`'s target that another member still owns.
    fn held_elsewhere(&self, id: &str, want: &Assignment) -> Assignment {
        let mut held = Assignment::new();
        for (other, m) in &self.members {
            if other != id {
                let both = intersect(want, &m.owned);
                for (t, ps) in both {
                    held.entry(t).or_default().extend(ps);
                }
            }
        }
        held
    }

    /// Moves one member towards its target; returns what to tell it.
    fn reconcile(&mut self, id: &str, now: i64) -> (i32, Option<Assignment>) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let Some(m) = self.members.get(id) else {
            return (-1, None);
        };
        let to_revoke = without(&m.owned, &target);
        let (epoch, owned, revoking) = if !to_revoke.is_empty() {
            // Ask it to keep only what it keeps; its epoch waits for the release.
            (m.epoch, intersect(&m.owned, &target), true)
        } else {
            let held = self.held_elsewhere(id, &target);
            (self.target_epoch, without(&target, &held), false)
        };
        let Some(m) = self.members.get_mut(id) else {
            return (-1, None);
        };
        if revoking {
            m.revoking_since.get_or_insert(now);
        } else {
            m.revoking_since = None;
            m.owned = owned.clone();
            if m.epoch != epoch {
                m.previous_epoch = m.epoch;
                m.epoch = epoch;
            }
        }
        let send = if m.last_sent.as_ref() != Some(&owned) {
            m.last_sent = Some(owned.clone());
            Some(owned)
        } else {
            None
        };
        (m.epoch, send)
    }

    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &TopicInfo,
        now: i64,
        new_member_id: impl FnOnce() -> String,
        describable: Describable<'_>,
    ) -> HeartbeatReply {
        // Leaving: -1 for dynamic members, -2 for a static member's temporary leave.
        if hb.member_epoch == -2 {
            if let Some(m) = self
                .members
                .get_mut(&hb.member_id)
                .filter(|m| m.instance_id.is_some())
            {
                // Its partitions stay its own until its next incarnation joins or the session
                // times out: that is what static membership is for.
                m.left_temporarily = true;
                m.last_heartbeat_ms = now;
                return HeartbeatReply::left(hb.member_id, hb.member_epoch);
            }
        }
        if hb.member_epoch < 0 {
            if self.members.shift_remove(&hb.member_id).is_some() {
                self.after_departure(topics, now);
            }
            return HeartbeatReply::left(hb.member_id, hb.member_epoch);
        }
        // A bad regex is refused before anything changes.
        let new_regex = match hb.subscribed_regex.as_deref() {
            None => None,
            Some("") => Some(None),
            // Kafka matches the whole topic name (RE2/J `matches()`).
            Some(src) => match regex::Regex::new(&format!("^(?:{src})$")) {
                Ok(re) => Some(Some((src.to_string(), re))),
                Err(e) => {
                    return HeartbeatReply::error(
                        err::INVALID_REGULAR_EXPRESSION,
                        &hb.member_id,
                        &format!("invalid subscription regex '{src}': {e}"),
                    )
                }
            },
        };
        let mut changed = false;
        let id = if hb.member_epoch == 0 {
            let id = if hb.member_id.is_empty() {
                new_member_id()
            } else {
                hb.member_id.clone()
            };
            if let Some(inst) = &hb.instance_id {
                // A static member replacing its previous incarnation takes over its partitions.
                let old = self
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(inst) && m.id != id)
                    .map(|m| (m.id.clone(), m.left_temporarily));
                if let Some((_, false)) = old {
                    // Two live consumers configured with one instance id: the newcomer is
                    // fenced, as in Kafka, rather than silently taking the other's partitions.
                    return HeartbeatReply::error(
                        err::UNRELEASED_INSTANCE_ID,
                        &id,
                        "another live member uses this group.instance.id",
                    );
                }
                if let Some((old, _)) = old {
                    if let Some(prev) = self.members.shift_remove(&old) {
                        if let Some(t) = self.target.remove(&old) {
                            self.target.insert(id.clone(), t);
                        }
                        let mut m = prev;
                        m.id = id.clone();
                        m.last_sent = None;
                        m.left_temporarily = false;
                        self.members.insert(id.clone(), m);
                    }
                }
            }
            let m = self.members.entry(id.clone()).or_insert_with(|| {
                changed = true;
                Member {
                    id: id.clone(),
                    instance_id: hb.instance_id.clone(),
                    client_id: hb.client_id.clone(),
                    client_host: hb.client_host.clone(),
                    principal: hb.principal.clone(),
                    subscribed: Vec::new(),
                    names: Vec::new(),
                    regex: None,
                    regex_pending: false,
                    rebalance_timeout_ms: if hb.rebalance_timeout_ms > 0 {
                        hb.rebalance_timeout_ms
                    } else {
                        DEFAULT_REBALANCE_TIMEOUT_MS
                    },
                    epoch: 0,
                    previous_epoch: 0,
                    owned: Assignment::new(),
                    revoking_since: None,
                    last_heartbeat_ms: now,
                    last_sent: None,
                    left_temporarily: false,
                }
            });
            if m.instance_id.is_none() && !changed {
                // A dynamic member rejoining at epoch 0 has dropped everything it owned.
                m.owned.clear();
                m.epoch = 0;
                m.last_sent = None;
            }
            if hb.subscribed.is_none()
                && hb.subscribed_regex.as_ref().is_none_or(|r| r.is_empty())
                && m.subscribed.is_empty()
                && m.regex.is_none()
            {
                return HeartbeatReply::error(
                    err::INVALID_REQUEST,
                    &id,
                    "a joining member must send its subscription",
                );
            }
            id
        } else {
            let Some(m) = self.members.get(&hb.member_id) else {
                return HeartbeatReply::error(
                    err::UNKNOWN_MEMBER_ID,
                    &hb.member_id,
                    "unknown member",
                );
            };
            if hb.member_epoch != m.epoch && hb.member_epoch != m.previous_epoch {
                return HeartbeatReply::error(
                    err::FENCED_MEMBER_EPOCH,
                    &hb.member_id,
                    &format!(
                        "member epoch {} is not the current {}",
                        hb.member_epoch, m.epoch
                    ),
                );
            }
            hb.member_id.clone()
        };
        let m = self.members.get_mut(&id).expect("member ensured above");
        m.last_heartbeat_ms = now;
        if m.principal != hb.principal {
            // A static member's new incarnation may have logged in as someone else.
            m.principal = hb.principal.clone();
            m.client_host = hb.client_host.clone();
        }
        // Back under its own member id after a temporary leave: live again.
        m.left_temporarily = false;
        // -1 means "unchanged since the last heartbeat" (librdkafka sends the value only in
        // full requests); taking it as 1 ms expired every member that was asked to revoke.
        if hb.rebalance_timeout_ms > 0 {
            m.rebalance_timeout_ms = hb.rebalance_timeout_ms;
        }
        if let Some(mut subs) = hb.subscribed {
            subs.sort();
            subs.dedup();
            m.names = subs;
        }
        let mut pending_now = false;
        match new_regex {
            None => {}
            Some(None) => m.regex = None,
            Some(Some(r)) if m.regex.as_ref().is_none_or(|(s, _)| *s != r.0) => {
                m.regex = Some(r);
                m.regex_pending = true;
                pending_now = true;
            }
            Some(Some(_)) => {}
        }
        // Every member's subscription from its names and its regex, against the topics as they
        // are now: a topic created or deleted since the last heartbeat changes it.
        for (mid, m) in self.members.iter_mut() {
            let mut subs = m.names.clone();
            if let Some((_, re)) = &m.regex {
                if m.regex_pending && !(pending_now && *mid == id) {
                    m.regex_pending = false;
                }
                if !m.regex_pending {
                    subs.extend(
                        topics
                            .keys()
                            .filter(|n| {
                                re.is_match(n) && describable(&m.principal, &m.client_host, n)
                            })
                            .cloned(),
                    );
                    subs.sort();
                    subs.dedup();
                }
            }
            if subs != m.subscribed {
                m.subscribed = subs;
                changed = true;
            }
        }
        let m = self.members.get_mut(&id).expect("member ensured above");
        if let Some(reported) = &hb.owned {
            // Partitions the member no longer reports are released.
            m.owned = intersect(&m.owned, reported);
        }
        let relevant: TopicInfo = topics
            .iter()
            .filter(|(n, _)| self.members.values().any(|m| m.subscribed.contains(n)))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        if changed || relevant != self.topics_seen {
            self.bump(&relevant);
        }
        let (epoch, assignment) = self.reconcile(&id, now);
        HeartbeatReply {
            error: 0,
            message: None,
            member_id: id,
            member_epoch: epoch,
            assignment,
        }
    }

    fn after_departure(&mut self, topics: &TopicInfo, now: i64) {
        if self.members.is_empty() {
            self.empty_since_ms = now;
            self.target.clear();
            self.epoch += 1;
            self.target_epoch = self.epoch;
            return;
        }
        let relevant: TopicInfo = topics
            .iter()
            .filter(|(n, _)| self.members.values().any(|m| m.subscribed.contains(n)))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        self.bump(&relevant);
    }

    /// Expires members past the session timeout and members that did not revoke within their
    /// rebalance timeout. Returns whether anything changed.
    pub fn tick(&mut self, topics: &TopicInfo, now: i64, session_timeout_ms: i64) -> bool {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now - m.last_heartbeat_ms > session_timeout_ms
                    || m.revoking_since
                        .is_some_and(|t| now - t > i64::from(m.rebalance_timeout_ms))
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            tracing::info!(group = %self.id, member = %id, "consumer group member expired");
            self.members.shift_remove(id);
        }
        if !gone.is_empty() {
            self.after_departure(topics, now);
        }
        !gone.is_empty()
    }

    /// Whether an offset commit carrying `epoch` from `member` is current.
    pub fn check_commit(&self, member: &str, epoch: i32) -> Result<(), i16> {
        match self.members.get(member) {
            None => Err(err::UNKNOWN_MEMBER_ID),
            Some(m) if epoch != m.epoch && epoch != m.previous_epoch => {
                Err(err::STALE_MEMBER_EPOCH)
            }
            Some(_) => Ok(()),
        }
    }

    /// The group epoch the current target assignment was computed at.
    pub fn assignment_epoch(&self) -> i32 {
        self.target_epoch
    }

    pub fn target_of(&self, member: &str) -> Assignment {
        self.target.get(member).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: i32) -> (TopicInfo, Uuid) {
        let id = Uuid::from_u128(7);
        (TopicInfo::from([("t".to_string(), (id, n))]), id)
    }

    fn hb(member: &str, epoch: i32, owned: Option<Assignment>) -> Heartbeat {
        Heartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: None,
            rebalance_timeout_ms: 30_000,
            subscribed: if epoch == 0 {
                Some(vec!["t".into()])
            } else {
                None
            },
            owned,
            client_id: "c".into(),
            client_host: "h".into(),
            principal: "User:ANONYMOUS".into(),
            subscribed_regex: None,
        }
    }

    fn count(a: &Option<Assignment>) -> usize {
        a.as_ref()
            .map(|a| a.values().map(|s| s.len()).sum())
            .unwrap_or(0)
    }

    fn static_hb(member: &str, epoch: i32, instance: &str) -> Heartbeat {
        Heartbeat {
            instance_id: Some(instance.into()),
            ..hb(member, epoch, None)
        }
    }

    #[test]
    fn a_live_static_member_fences_a_duplicate_and_a_restarted_one_keeps_its_partitions() {
        let (t, _) = topics(4);
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.heartbeat(
            static_hb("a", 0, "i1"),
            &t,
            0,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(count(&a.assignment), 4);
        let b = g.heartbeat(
            static_hb("b", 0, "i2"),
            &t,
            10,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(b.error, 0);
        // A second consumer started with a's instance id while a is alive.
        let dup = g.heartbeat(
            static_hb("dup", 0, "i1"),
            &t,
            20,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(dup.error, err::UNRELEASED_INSTANCE_ID);
        assert!(!g.members.contains_key("dup"));
        // a settles its share, then restarts: leaves with -2 and comes back as a new member id.
        let a2 = g.heartbeat(
            static_hb("a", a.member_epoch, "i1"),
            &t,
            30,
            || unreachable!(),
            &|_, _, _| true,
        );
        let kept = a2.assignment.clone().unwrap();
        let a3 = g.heartbeat(
            Heartbeat {
                owned: Some(kept.clone()),
                ..static_hb("a", a.member_epoch, "i1")
            },
            &t,
            40,
            || unreachable!(),
            &|_, _, _| true,
        );
        let left = g.heartbeat(
            static_hb("a", -2, "i1"),
            &t,
            50,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!((left.error, left.member_epoch), (0, -2));
        // b's heartbeats while a is away do not hand it a's partitions.
        let b2 = g.heartbeat(
            static_hb("b", b.member_epoch, "i2"),
            &t,
            60,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(count(&b2.assignment), 4 - count(&Some(kept.clone())));
        let back = g.heartbeat(
            static_hb("a-new", 0, "i1"),
            &t,
            70,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(back.error, 0);
        assert_eq!(
            back.assignment,
            Some(kept),
            "the restarted member keeps its partitions"
        );
        assert!(!g.members.contains_key("a"));
        let _ = a3;
    }

    /// KIP-848 regexes match only the topics the member's principal may describe, each
    /// member by its own principal.
    #[test]
    fn a_regex_matches_only_topics_its_principal_may_describe() {
        let (mut t, _) = topics(2);
        t.insert("t-secret".into(), (Uuid::from_u128(8), 3));
        let mut g = ConsumerGroup::new("g", 0);
        let may = |principal: &str, _host: &str, topic: &str| {
            principal == "User:boss" || !topic.contains("secret")
        };
        for (id, principal) in [("a", "User:alice"), ("b", "User:boss")] {
            let join = Heartbeat {
                subscribed: None,
                subscribed_regex: Some("t.*".into()),
                principal: principal.into(),
                ..hb(id, 0, None)
            };
            let r = g.heartbeat(join, &t, 0, || unreachable!(), &may);
            assert_eq!(r.error, 0);
        }
        // The regex applies from the next heartbeat.
        for (id, principal) in [("a", "User:alice"), ("b", "User:boss")] {
            let e = g.members[id].epoch;
            let again = Heartbeat {
                principal: principal.into(),
                ..hb(id, e, None)
            };
            g.heartbeat(again, &t, 6, || unreachable!(), &may);
        }
        assert_eq!(g.members["a"].subscribed, vec!["t".to_string()]);
        assert_eq!(
            g.members["b"].subscribed,
            vec!["t".to_string(), "t-secret".to_string()]
        );
    }

    #[test]
    fn a_regex_subscription_follows_the_topics_it_matches() {
        let (mut t, _) = topics(2);
        t.insert("other".into(), (Uuid::from_u128(8), 3));
        t.insert("t2".into(), (Uuid::from_u128(9), 2));
        let mut g = ConsumerGroup::new("g", 0);
        let join = Heartbeat {
            subscribed: None,
            subscribed_regex: Some("t.*".into()),
            ..hb("a", 0, None)
        };
        let a0 = g.heartbeat(join, &t, 0, || unreachable!(), &|_, _, _| true);
        assert_eq!(a0.error, 0);
        assert_eq!(
            count(&a0.assignment),
            0,
            "a new regex takes effect at the next heartbeat"
        );
        let a = g.heartbeat(
            hb("a", a0.member_epoch, None),
            &t,
            5,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(a.error, 0, "{:?}", a.message);
        assert_eq!(
            g.members["a"].subscribed,
            vec!["t".to_string(), "t2".to_string()]
        );
        assert_eq!(count(&a.assignment), 4, "t and t2, not 'other'");
        // A matching topic appears: the next heartbeat picks it up.
        t.insert("t3".into(), (Uuid::from_u128(10), 1));
        let a2 = g.heartbeat(
            hb("a", a.member_epoch, None),
            &t,
            10,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert!(a2.member_epoch > a.member_epoch, "the group epoch moved");
        assert_eq!(count(&a2.assignment), 5);
        // The whole name must match.
        t.insert("xt".into(), (Uuid::from_u128(11), 1));
        g.heartbeat(
            hb("a", a2.member_epoch, None),
            &t,
            20,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert!(!g.members["a"].subscribed.contains(&"xt".to_string()));
        let bad = Heartbeat {
            subscribed: None,
            subscribed_regex: Some("(".into()),
            ..hb("b", 0, None)
        };
        assert_eq!(
            g.heartbeat(bad, &t, 30, || unreachable!(), &|_, _, _| true)
                .error,
            err::INVALID_REGULAR_EXPRESSION
        );
        assert!(
            !g.members.contains_key("b"),
            "a refused join adds no member"
        );

        // Names and a regex together: the union, the named topic first.
        let both = Heartbeat {
            subscribed: Some(vec!["other".into()]),
            subscribed_regex: Some("t2|t3".into()),
            ..hb("c", 0, None)
        };
        g.heartbeat(both, &t, 40, || unreachable!(), &|_, _, _| true);
        assert_eq!(g.members["c"].subscribed, vec!["other".to_string()]);
        let c = g.members["c"].epoch;
        g.heartbeat(hb("c", c, None), &t, 50, || unreachable!(), &|_, _, _| true);
        assert_eq!(
            g.members["c"].subscribed,
            vec!["other".to_string(), "t2".to_string(), "t3".to_string()]
        );
    }

    #[test]
    fn partitions_move_only_after_release() {
        let (t, tid) = topics(6);
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.heartbeat(hb("a", 0, None), &t, 0, || unreachable!(), &|_, _, _| true);
        assert_eq!(count(&a.assignment), 6);
        let a_epoch = a.member_epoch;
        // b joins: gets nothing until a gives up three partitions.
        let b = g.heartbeat(hb("b", 0, None), &t, 10, || unreachable!(), &|_, _, _| true);
        assert_eq!(count(&b.assignment), 0);
        let a2 = g.heartbeat(
            hb("a", a_epoch, None),
            &t,
            20,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(count(&a2.assignment), 3, "a is told to keep three");
        assert_eq!(a2.member_epoch, a_epoch, "epoch waits for the release");
        let b2 = g.heartbeat(
            hb("b", b.member_epoch, None),
            &t,
            30,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(count(&b2.assignment), 0, "still owned by a");
        // a reports it released them.
        let kept = a2.assignment.clone().unwrap();
        let a3 = g.heartbeat(
            hb("a", a_epoch, Some(kept)),
            &t,
            40,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert!(a3.member_epoch > a_epoch);
        let b3 = g.heartbeat(
            hb("b", b2.member_epoch, None),
            &t,
            50,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(count(&b3.assignment), 3);
        // Never owned twice.
        let mut all = BTreeSet::new();
        for m in g.members.values() {
            for p in m.owned.get(&tid).into_iter().flatten() {
                assert!(all.insert(*p), "partition {p} owned twice");
            }
        }
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn stale_epochs_are_fenced_and_leavers_free_partitions() {
        let (t, _) = topics(4);
        let mut g = ConsumerGroup::new("g", 0);
        let a = g.heartbeat(hb("a", 0, None), &t, 0, || unreachable!(), &|_, _, _| true);
        let r = g.heartbeat(
            hb("a", a.member_epoch + 5, None),
            &t,
            1,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(r.error, err::FENCED_MEMBER_EPOCH);
        let b = g.heartbeat(hb("b", 0, None), &t, 2, || unreachable!(), &|_, _, _| true);
        let gone = g.heartbeat(hb("a", -1, None), &t, 3, || unreachable!(), &|_, _, _| true);
        assert_eq!(gone.error, 0);
        let b2 = g.heartbeat(
            hb("b", b.member_epoch, None),
            &t,
            4,
            || unreachable!(),
            &|_, _, _| true,
        );
        assert_eq!(count(&b2.assignment), 4);
        assert!(g.tick(&t, 4 + SESSION_TIMEOUT_MS + 1, SESSION_TIMEOUT_MS));
        assert!(g.members.is_empty());
    }
}

#[cfg(test)]
mod topic_deletion_tests {
    use super::*;

    fn beat(
        g: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: Option<Assignment>,
        t: &TopicInfo,
        now: i64,
    ) -> HeartbeatReply {
        let hb = Heartbeat {
            group_id: "g".into(),
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            // As librdkafka does: the timeout in the joining (full) request, -1 afterwards.
            rebalance_timeout_ms: if epoch == 0 { 30_000 } else { -1 },
            subscribed: None,
            subscribed_regex: if epoch == 0 { Some("t.*".into()) } else { None },
            owned,
            client_id: "c".into(),
            client_host: "h".into(),
            principal: "User:ANONYMOUS".into(),
        };
        g.heartbeat(hb, t, now, || unreachable!(), &|_, _, _| true)
    }

    #[test]
    fn deleting_a_subscribed_topic_does_not_fence_members() {
        let t1 = Uuid::from_u128(1);
        let t2 = Uuid::from_u128(2);
        let mut t = TopicInfo::from([("t1".to_string(), (t1, 2)), ("t2".to_string(), (t2, 2))]);
        let mut g = ConsumerGroup::new("g", 0);
        let mut state: BTreeMap<&str, (i32, Assignment)> = BTreeMap::new();
        let mut now = 0;
        for id in ["a", "b"] {
            let r = beat(&mut g, id, 0, None, &t, now);
            state.insert(id, (r.member_epoch, r.assignment.unwrap_or_default()));
        }
        // Converge: each member acks what it was given, several rounds.
        for round in 0..12 {
            if round == 6 {
                t.remove("t1");
            }
            for id in ["a", "b"] {
                now += 10;
                let (e, owned) = state[id].clone();
                let r = beat(&mut g, id, e, Some(owned.clone()), &t, now);
                assert_eq!(r.error, 0, "round {round} member {id}: {:?}", r.message);
                // Revocations take a while (one tick per round); nobody may be expired for it.
                assert!(!g.tick(&t, now + 5, SESSION_TIMEOUT_MS));
                let next = r.assignment.unwrap_or(owned);
                state.insert(id, (r.member_epoch, next));
            }
        }
        let total: usize = state
            .values()
            .map(|(_, a)| a.values().map(|s| s.len()).sum::<usize>())
            .sum();
        assert_eq!(total, 2, "t2's two partitions, once each: {state:?}");
    }
}
