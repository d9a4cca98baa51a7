//! Share groups (KIP-932): queue-like consumption where a partition's records are handed out to
//! many members, each record to one member at a time, acknowledged one by one. A pure state
//! machine: time and partition watermarks come in as arguments.
//!
//! Per share-partition, offsets below the share-partition start offset (SPSO) are done. Above
//! it, a record is Available (never or no longer acquired), Acquired by one member until a lock
//! deadline, Acknowledged, or Archived (rejected, or delivered too often: the dead-letter
//! state). A lock that expires makes the record Available again with its delivery count kept;
//! a record whose count has reached [`MAX_DELIVERIES`] is archived instead of delivered again.
//!
//! Invariant: an offset is Acquired by at most one member, and only Acquired offsets can be
//! acknowledged, by the member holding them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

/// `group.share.record.lock.duration.ms`.
pub const LOCK_MS: i64 = 30_000;
/// `group.share.delivery.count.limit`.
pub const MAX_DELIVERIES: i16 = 5;
/// `group.share.partition.max.record.locks`: records of one partition acquired at once.
pub const MAX_LOCKS: usize = 2000;
/// Broker-side session timeout of share-group members.
pub const SESSION_TIMEOUT_MS: i64 = 45_000;
pub const HEARTBEAT_INTERVAL_MS: i32 = 5_000;

pub mod err {
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_REQUEST: i16 = 42;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const INVALID_RECORD_STATE: i16 = 121;
    pub const SHARE_SESSION_NOT_FOUND: i16 = 122;
    pub const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
}

/// Acknowledgement types of ShareFetch/ShareAcknowledge.
pub const ACK_GAP: i8 = 0;
pub const ACK_ACCEPT: i8 = 1;
pub const ACK_RELEASE: i8 = 2;
pub const ACK_REJECT: i8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rec {
    Available {
        deliveries: i16,
    },
    Acquired {
        member: String,
        deadline: i64,
        deliveries: i16,
    },
    Done,
}

/// One topic-partition as a share group sees it.
#[derive(Debug, Clone, Default)]
pub struct SharePartition {
    /// Share-partition start offset: everything below is acknowledged or archived.
    pub spso: i64,
    /// States of offsets at or above `spso` that were ever acquired.
    inflight: BTreeMap<i64, Rec>,
    /// First offset never handed out yet.
    next_new: i64,
    pub archived: u64,
    /// The start offset last written to the offsets log.
    pub persisted_spso: i64,
    /// Offsets archived since the caller last took them, with their delivery counts and why:
    /// the caller copies those records to the group's dead-letter topic.
    pub dead: Vec<(i64, i16, &'static str)>,
}

/// A run of acquired offsets with the delivery count they were handed out with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub first: i64,
    pub last: i64,
    pub deliveries: i16,
}

impl SharePartition {
    pub fn new(start: i64) -> SharePartition {
        SharePartition {
            spso: start,
            inflight: BTreeMap::new(),
            next_new: start,
            archived: 0,
            persisted_spso: start,
            dead: Vec::new(),
        }
    }

    /// Hands up to `max` records in `[log_start, high)` to `member`, oldest first.
    pub fn acquire(
        &mut self,
        member: &str,
        log_start: i64,
        high: i64,
        max: usize,
        now: i64,
    ) -> Vec<Acquired> {
        if self.spso < log_start {
            // Retention took records nobody finished: they are gone for the group too.
            self.inflight = self.inflight.split_off(&log_start);
            self.spso = log_start;
            self.next_new = self.next_new.max(log_start);
        }
        let mut out: Vec<Acquired> = Vec::new();
        let push = |out: &mut Vec<Acquired>, o: i64, d: i16| match out.last_mut() {
            Some(a) if a.last + 1 == o && a.deliveries == d => a.last = o,
            _ => out.push(Acquired {
                first: o,
                last: o,
                deliveries: d,
            }),
        };
        let locked = self
            .inflight
            .values()
            .filter(|r| matches!(r, Rec::Acquired { .. }))
            .count();
        let max = max.min(MAX_LOCKS.saturating_sub(locked));
        let mut taken = 0;
        let deadline = now + LOCK_MS;
        for (&o, rec) in self.inflight.iter_mut() {
            if taken >= max {
                break;
            }
            if let Rec::Available { deliveries } = *rec {
                if deliveries >= MAX_DELIVERIES {
                    *rec = Rec::Done;
                    self.archived += 1;
                    tracing::warn!(
                        offset = o,
                        deliveries,
                        "share record archived after its delivery limit"
                    );
                    continue;
                }
                *rec = Rec::Acquired {
                    member: member.to_string(),
                    deadline,
                    deliveries: deliveries + 1,
                };
                push(&mut out, o, deliveries + 1);
                taken += 1;
            }
        }
        while taken < max && self.next_new < high {
            let o = self.next_new;
            self.inflight.insert(
                o,
                Rec::Acquired {
                    member: member.to_string(),
                    deadline,
                    deliveries: 1,
                },
            );
            push(&mut out, o, 1);
            self.next_new += 1;
            taken += 1;
        }
        self.advance();
        out.sort_by_key(|a| a.first);
        out
    }

    /// Applies one acknowledgement batch from `member`. `types` holds one type for the whole
    /// range or one per offset.
    pub fn acknowledge(
        &mut self,
        member: &str,
        first: i64,
        last: i64,
        types: &[i8],
    ) -> Result<(), i16> {
        if last < first
            || types.is_empty()
            || (types.len() != 1 && types.len() as i64 != last - first + 1)
        {
            return Err(err::INVALID_REQUEST);
        }
        // Check the whole batch first, so it is applied entirely or not at all.
        for o in first..=last {
            let t = types[if types.len() == 1 {
                0
            } else {
                (o - first) as usize
            }];
            let held = matches!(self.inflight.get(&o), Some(Rec::Acquired { member: m, .. }) if m == member);
            if !held && t != ACK_GAP {
                return Err(err::INVALID_RECORD_STATE);
            }
        }
        for o in first..=last {
            let t = types[if types.len() == 1 {
                0
            } else {
                (o - first) as usize
            }];
            let Some(rec) = self.inflight.get_mut(&o) else {
                continue;
            };
            let deliveries = match rec {
                Rec::Acquired { deliveries, .. } => *deliveries,
                _ => continue,
            };
            *rec = match t {
                ACK_RELEASE if deliveries >= MAX_DELIVERIES => {
                    self.archived += 1;
                    self.dead.push((o, deliveries, "delivery limit reached"));
                    Rec::Done
                }
                ACK_RELEASE => Rec::Available { deliveries },
                ACK_REJECT => {
                    self.archived += 1;
                    self.dead.push((o, deliveries, "rejected by the consumer"));
                    Rec::Done
                }
                _ => Rec::Done,
            };
        }
        self.advance();
        Ok(())
    }

    /// Takes back offsets from `from` on that `member` acquired but will not be sent (they did
    /// not fit in the response): not a delivery, so the count is restored.
    pub fn unacquire(&mut self, member: &str, from: i64) {
        for (_, rec) in self.inflight.range_mut(from..) {
            if let Rec::Acquired {
                member: m,
                deliveries,
                ..
            } = rec
            {
                if m == member {
                    *rec = Rec::Available {
                        deliveries: *deliveries - 1,
                    };
                }
            }
        }
    }

    /// Releases what `member` holds (it left, expired or closed its session).
    pub fn release_member(&mut self, member: &str) {
        for rec in self.inflight.values_mut() {
            if let Rec::Acquired {
                member: m,
                deliveries,
                ..
            } = rec
            {
                if m == member {
                    *rec = Rec::Available {
                        deliveries: *deliveries,
                    };
                }
            }
        }
    }

    /// Expired locks make their records available again.
    pub fn tick(&mut self, now: i64) {
        for rec in self.inflight.values_mut() {
            if let Rec::Acquired {
                deadline,
                deliveries,
                ..
            } = rec
            {
                if *deadline <= now {
                    *rec = Rec::Available {
                        deliveries: *deliveries,
                    };
                }
            }
        }
    }

    fn advance(&mut self) {
        while let Some((&o, Rec::Done)) = self.inflight.first_key_value() {
            self.inflight.remove(&o);
            self.spso = o + 1;
        }
        if self.inflight.is_empty() {
            self.spso = self.spso.max(self.next_new);
        }
    }

    /// Whether any record could be handed out now (for long polling).
    pub fn has_available(&self, high: i64) -> bool {
        self.next_new < high
            || self
                .inflight
                .values()
                .any(|r| matches!(r, Rec::Available { .. }))
    }
}

pub type TopicPartitions = BTreeMap<Uuid, BTreeSet<i32>>;

#[derive(Debug, Clone)]
pub struct ShareMember {
    pub id: String,
    pub subscribed: Vec<String>,
    pub last_heartbeat_ms: i64,
    pub epoch: i32,
    pub client_id: String,
    pub client_host: String,
}

/// A share session: the partitions a member fetches from, and the epoch its next request
/// must carry.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub next_epoch: i32,
    pub partitions: BTreeSet<(Uuid, i32)>,
    pub last_used_ms: i64,
}

#[derive(Default)]
pub struct ShareGroup {
    pub epoch: i32,
    pub members: BTreeMap<String, ShareMember>,
    pub partitions: HashMap<(Uuid, i32), SharePartition>,
    pub sessions: HashMap<String, Session>,
}

impl ShareGroup {
    /// Every member is assigned every partition of the topics it subscribes to: records are
    /// shared out by acquisition, not by partition ownership.
    pub fn assignment(
        &self,
        member: &str,
        topics: &BTreeMap<String, (Uuid, i32)>,
    ) -> TopicPartitions {
        let mut a = TopicPartitions::new();
        if let Some(m) = self.members.get(member) {
            for t in &m.subscribed {
                if let Some(&(id, n)) = topics.get(t) {
                    a.insert(id, (0..n).collect());
                }
            }
        }
        a
    }

    /// A member leaving. Its share session and the records it holds stay until it closes
    /// the session (clients send their last acknowledgements after leaving) or the session
    /// goes idle.
    pub fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.epoch += 1;
        }
    }

    fn drop_session(&mut self, id: &str) {
        self.sessions.remove(id);
        for p in self.partitions.values_mut() {
            p.release_member(id);
        }
    }

    /// Expires silent members and lapsed locks. Returns the expired members.
    pub fn tick(&mut self, now: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now - m.last_heartbeat_ms > SESSION_TIMEOUT_MS)
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
            self.drop_session(id);
        }
        let idle: Vec<String> = self
            .sessions
            .iter()
            .filter(|(m, s)| {
                !self.members.contains_key(*m) && now - s.last_used_ms > SESSION_TIMEOUT_MS
            })
            .map(|(m, _)| m.clone())
            .collect();
        for id in idle {
            self.drop_session(&id);
        }
        for p in self.partitions.values_mut() {
            p.tick(now);
        }
        gone
    }

    /// Checks and advances a member's share session for a request carrying `epoch`, with the
    /// partitions it adds and forgets. Epoch 0 opens a new session; -1 closes it.
    pub fn session(
        &mut self,
        member: &str,
        epoch: i32,
        add: &[(Uuid, i32)],
        forget: &[(Uuid, i32)],
        now: i64,
    ) -> Result<BTreeSet<(Uuid, i32)>, i16> {
        match epoch {
            0 => {
                let s = Session {
                    next_epoch: 1,
                    partitions: add.iter().copied().collect(),
                    last_used_ms: now,
                };
                let parts = s.partitions.clone();
                self.sessions.insert(member.to_string(), s);
                Ok(parts)
            }
            -1 => {
                // Closing: whatever the member still holds goes back to the group. Closing a
                // session that is already gone is not an error worth failing a close over.
                let parts = self
                    .sessions
                    .get(member)
                    .map(|s| s.partitions.clone())
                    .unwrap_or_default();
                self.drop_session(member);
                Ok(parts)
            }
            e => {
                let s = self
                    .sessions
                    .get_mut(member)
                    .ok_or(err::SHARE_SESSION_NOT_FOUND)?;
                s.last_used_ms = now;
                if e != s.next_epoch {
                    return Err(err::INVALID_SHARE_SESSION_EPOCH);
                }
                s.next_epoch = if e == i32::MAX { 1 } else { e + 1 };
                s.partitions.extend(add.iter().copied());
                for f in forget {
                    s.partitions.remove(f);
                }
                Ok(s.partitions.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_to_one_member_and_come_back_when_locks_expire() {
        let mut p = SharePartition::new(0);
        let a = p.acquire("a", 0, 10, 4, 0);
        assert_eq!(
            a,
            vec![Acquired {
                first: 0,
                last: 3,
                deliveries: 1
            }]
        );
        let b = p.acquire("b", 0, 10, 100, 0);
        assert_eq!(
            b,
            vec![Acquired {
                first: 4,
                last: 9,
                deliveries: 1
            }]
        );
        assert_eq!(p.acquire("c", 0, 10, 100, 0), vec![]);
        // b acknowledges; a's lock lapses.
        p.acknowledge("b", 4, 9, &[ACK_ACCEPT]).unwrap();
        assert_eq!(
            p.acknowledge("c", 0, 0, &[ACK_ACCEPT]),
            Err(err::INVALID_RECORD_STATE)
        );
        p.tick(LOCK_MS + 1);
        let c = p.acquire("c", 0, 10, 100, LOCK_MS + 1);
        assert_eq!(
            c,
            vec![Acquired {
                first: 0,
                last: 3,
                deliveries: 2
            }]
        );
        p.acknowledge(
            "c",
            0,
            3,
            &[ACK_ACCEPT, ACK_ACCEPT, ACK_RELEASE, ACK_REJECT],
        )
        .unwrap();
        assert_eq!(p.spso, 2);
        assert_eq!(
            p.acquire("a", 0, 10, 100, LOCK_MS + 2),
            vec![Acquired {
                first: 2,
                last: 2,
                deliveries: 3
            }]
        );
        p.acknowledge("a", 2, 2, &[ACK_ACCEPT]).unwrap();
        assert_eq!(p.spso, 10);
        assert_eq!(p.archived, 1);
    }

    #[test]
    fn a_poison_record_is_archived_after_the_delivery_limit() {
        let mut p = SharePartition::new(0);
        for round in 0..MAX_DELIVERIES {
            let got = p.acquire("a", 0, 1, 10, 0);
            assert_eq!(
                got,
                vec![Acquired {
                    first: 0,
                    last: 0,
                    deliveries: round + 1
                }]
            );
            p.acknowledge("a", 0, 0, &[ACK_RELEASE]).unwrap();
        }
        assert!(p.acquire("a", 0, 1, 10, 0).is_empty());
        assert_eq!(p.archived, 1);
        assert_eq!(p.spso, 1);
        assert_eq!(p.dead, vec![(0, MAX_DELIVERIES, "delivery limit reached")]);
    }

    #[test]
    fn sessions_check_epochs() {
        let mut g = ShareGroup::default();
        let t = Uuid::from_u128(1);
        assert_eq!(g.session("m", 0, &[(t, 0)], &[], 0).unwrap().len(), 1);
        assert_eq!(
            g.session("m", 2, &[], &[], 0),
            Err(err::INVALID_SHARE_SESSION_EPOCH)
        );
        assert_eq!(g.session("m", 1, &[(t, 1)], &[], 0).unwrap().len(), 2);
        assert_eq!(g.session("m", 2, &[], &[(t, 0)], 0).unwrap().len(), 1);
        assert!(g.session("m", -1, &[], &[], 0).is_ok());
        assert_eq!(
            g.session("m", 3, &[], &[], 0),
            Err(err::SHARE_SESSION_NOT_FOUND)
        );
    }
}
