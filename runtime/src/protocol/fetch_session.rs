//! Fetch sessions (KIP-227): a consumer with many partitions names them once, then sends
//! only what changed (new fetch offsets, partitions added or forgotten), and each answer
//! carries only the partitions that have something to say. Without them a consumer of 1,000
//! partitions sends and receives 1,000 entries on every fetch, most of them empty.
//!
//! I/O-free: [`Sessions::open`] turns a request into a [`Plan`], the partitions to read in
//! answer order, each with what the session last told the client of it; the fetch
//! (`fetch.rs`) reads them, leaving out what [`Plan::shows`] says the client already has,
//! and [`Sessions::close`] remembers what the answer told.
//!
//! What an incremental fetch costs grows with the partitions that have news, not with the
//! session: a partition is not even looked at when the client asks from its high watermark
//! and its change count (`Partition::changes`, bumped after anything that moves its
//! watermarks, readable without the log's lock) is the one noted before the watermarks the
//! session last sent were read. A session keeps its partitions in a slab in rotation order,
//! so a request rebuilds nothing and an answer updates its partitions by index.
//!
//! Invariants:
//! - A session answers an incremental request only at the epoch it expects next, so a
//!   request replayed or sent twice gets INVALID_FETCH_SESSION_EPOCH, never a trimmed answer
//!   computed against state the client never saw.
//! - A partition is left out of an incremental answer only when it has no records and no
//!   error, and its high watermark, last stable offset and log start offset are the ones the
//!   session last sent. Partitions with records are never dropped, so the file ranges that
//!   stand for records (`pieces.rs`) keep their order.
//! - What a session remembers of a partition was sent to the client: an answer updates the
//!   session only if no other request of the session was opened since its own (a client
//!   that sends the next epoch before the answer arrives gets answers that show more, never
//!   less). Watermarks only move forward, so an older memory can only make an answer show
//!   more.
//! - The cache holds at most [`MAX_SESSIONS`]. As in Kafka, a new session takes the place of
//!   one idle for [`EVICTION_AFTER`], else of an older one with fewer partitions; failing
//!   both it is not made and the answer is sessionless. A busy consumer's session is never
//!   thrown out for a newcomer's (a client that opens a session on every fetch would
//!   otherwise flush everyone's). An evicted session's next request gets
//!   FETCH_SESSION_ID_NOT_FOUND and the client starts again with a full request: a round
//!   trip, never records.
//! - Nothing cached points into a request's buffer (decoded names do), so a session holds
//!   only its own bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

/// Kafka's `max.incremental.fetch.session.cache.slots` default.
pub const MAX_SESSIONS: usize = 1000;
/// Kafka's `min.incremental.fetch.session.eviction.ms` default.
pub const EVICTION_AFTER: Duration = Duration::from_secs(120);

const INITIAL_EPOCH: i32 = 0;
const FINAL_EPOCH: i32 = -1;
pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
/// A session made with topic ids used by a request naming topics, or the other way round.
pub const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// A topic as requests name it: (topic id, topic name). Requests from v13 on name topics by
/// id (the name is empty), older ones by name (the id is nil).
type TopicKey = (Uuid, String);

/// A [`TopicKey`] borrowed from a request, so looking a topic up allocates nothing. Hashes
/// as the tuple does (a `&str` hashes as a `String`).
#[derive(Hash)]
struct TopicRef<'a>(Uuid, &'a str);

impl indexmap::Equivalent<TopicKey> for TopicRef<'_> {
    fn equivalent(&self, key: &TopicKey) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A session's own copy of a topic's id and name, shared by its partitions' entries.
type SessionTopic = Arc<(Uuid, TopicName)>;

/// What one fetch reads: its topics in answer order (a topic appears again wherever
/// another's partition came between, as in Kafka's answers, so the rotation holds across
/// topics too), each with the partitions to read.
#[derive(Debug, Default)]
pub struct Plan {
    pub topics: Vec<PlanTopic>,
    /// An incremental request: what the client already has is left out of the answer.
    pub trim: bool,
    session: Option<PlanSession>,
}

#[derive(Debug, Clone, Copy)]
struct PlanSession {
    id: i32,
    /// The session's generation when this plan was made (see [`Sessions::close`]).
    generation: u64,
}

#[derive(Debug)]
pub struct PlanTopic {
    pub id: Uuid,
    pub name: TopicName,
    pub partitions: Vec<Want>,
}

/// A partition to read.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// What the session last told the client of it (None: nothing yet, or an error).
    pub sent: Option<Sent>,
    /// Its place in the session's slab.
    slot: u32,
}

/// A partition's state as an answer told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub high: i64,
    pub stable: i64,
    pub log_start: i64,
    /// The partition's change count, read before those watermarks were.
    pub changes: u64,
    /// The id of the topic it belonged to (a topic recreated under its name is another).
    pub topic: Uuid,
}

impl Sent {
    fn same_state(&self, other: &Sent) -> bool {
        (self.high, self.stable, self.log_start, self.topic)
            == (other.high, other.stable, other.log_start, other.topic)
    }
}

/// What a fetch found of one planned partition.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// Not read: [`Want::unchanged`].
    Unchanged,
    /// Answered with an error code.
    Error,
    /// Read: its state, and whether records went with it.
    Read { sent: Sent, records: bool },
}

impl Want {
    /// Whether the partition may be left unread: the client asks from the high watermark it
    /// was last told, and nothing has changed since (same topic, same change count), so an
    /// incremental answer would leave it out anyway.
    pub fn unchanged(&self, topic: Uuid, changes: u64) -> bool {
        self.sent.is_some_and(|s| {
            s.topic == topic && s.changes == changes && self.fetch_offset == s.high
        })
    }
}

impl Plan {
    /// A full request read as it is, with no session.
    fn whole(req: &FetchRequest) -> Plan {
        Plan {
            topics: req
                .topics
                .iter()
                .map(|t| PlanTopic {
                    id: t.topic_id,
                    name: t.topic.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| Want {
                            partition: p.partition,
                            fetch_offset: p.fetch_offset,
                            max_bytes: p.partition_max_bytes,
                            sent: None,
                            slot: 0,
                        })
                        .collect(),
                })
                .collect(),
            trim: false,
            session: None,
        }
    }

    /// Whether the answer for `want` belongs in the response: always in a full one; in an
    /// incremental one when it carries records or an error, or a state the client was not
    /// last told.
    pub fn shows(&self, want: &Want, seen: &Seen) -> bool {
        if !self.trim {
            return true;
        }
        match seen {
            Seen::Unchanged => false,
            Seen::Error => true,
            Seen::Read { sent, records } => {
                *records || !want.sent.is_some_and(|w| w.same_state(sent))
            }
        }
    }

    /// The partitions in order.
    pub fn wants(&self) -> impl Iterator<Item = &Want> {
        self.topics.iter().flat_map(|t| t.partitions.iter())
    }
}

struct Entry {
    topic: SessionTopic,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
    sent: Option<Sent>,
    /// False once forgotten (its slot is free).
    live: bool,
}

struct Session {
    /// Partitions by slot; forgotten ones leave a free slot.
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Live slots in the order of the next read: a partition that returned records goes to
    /// the back, so under a byte limit the others get their turn (as Kafka does).
    order: Vec<u32>,
    /// Slots by topic and partition. Never holds a topic without partitions.
    index: IndexMap<TopicKey, (SessionTopic, HashMap<i32, u32>)>,
    /// Changed by every request opened in the session (see [`Sessions::close`]).
    generation: u64,
    /// The epoch the next incremental request must carry.
    next_epoch: i32,
    /// Whether its requests name topics by id (Fetch v13 on).
    by_id: bool,
    created: Instant,
    used: Instant,
}

impl Session {
    fn new(by_id: bool, now: Instant, generation: u64) -> Session {
        Session {
            entries: Vec::new(),
            free: Vec::new(),
            order: Vec::new(),
            index: IndexMap::new(),
            generation,
            next_epoch: 1,
            by_id,
            created: now,
            used: now,
        }
    }

    fn count(&self) -> usize {
        self.order.len()
    }

    /// Adds or updates the partitions a request names (keeping what was last sent of
    /// those already in).
    fn apply(&mut self, topics: &[FetchTopic]) {
        for t in topics {
            if t.partitions.is_empty() {
                continue;
            }
            let key = TopicRef(t.topic_id, t.topic.0.as_str());
            let at = match self.index.get_index_of(&key) {
                Some(at) => at,
                None => {
                    // An owned name: the request's points into its buffer.
                    let name = TopicName(StrBytes::from_string(t.topic.0.to_string()));
                    let topic = Arc::new((t.topic_id, name));
                    let key = (t.topic_id, t.topic.0.to_string());
                    self.index.insert_full(key, (topic, HashMap::new())).0
                }
            };
            let (arc, slots) = &mut self.index[at];
            for p in &t.partitions {
                if let Some(&slot) = slots.get(&p.partition) {
                    let e = &mut self.entries[slot as usize];
                    e.fetch_offset = p.fetch_offset;
                    e.max_bytes = p.partition_max_bytes;
                    continue;
                }
                let entry = Entry {
                    topic: arc.clone(),
                    partition: p.partition,
                    fetch_offset: p.fetch_offset,
                    max_bytes: p.partition_max_bytes,
                    sent: None,
                    live: true,
                };
                let slot = match self.free.pop() {
                    Some(s) => {
                        self.entries[s as usize] = entry;
                        s
                    }
                    None => {
                        self.entries.push(entry);
                        (self.entries.len() - 1) as u32
                    }
                };
                slots.insert(p.partition, slot);
                self.order.push(slot);
            }
        }
    }

    fn forget(&mut self, forgotten: &[ForgottenTopic]) {
        let mut any = false;
        for f in forgotten {
            let key = TopicRef(f.topic_id, f.topic.0.as_str());
            let Some((_, slots)) = self.index.get_mut(&key) else {
                continue;
            };
            for p in &f.partitions {
                if let Some(slot) = slots.remove(p) {
                    self.entries[slot as usize].live = false;
                    self.free.push(slot);
                    any = true;
                }
            }
            if slots.is_empty() {
                self.index.swap_remove(&key);
            }
        }
        if any {
            let entries = &self.entries;
            self.order.retain(|s| entries[*s as usize].live);
        }
    }

    /// Every partition of the session, in rotation order.
    fn plan(&self, id: i32, trim: bool) -> Plan {
        let mut topics: Vec<PlanTopic> = Vec::new();
        let mut last: Option<&SessionTopic> = None;
        for &slot in &self.order {
            let e = &self.entries[slot as usize];
            if !last.is_some_and(|l| Arc::ptr_eq(l, &e.topic)) {
                topics.push(PlanTopic {
                    id: e.topic.0,
                    name: e.topic.1.clone(),
                    partitions: Vec::new(),
                });
                last = Some(&e.topic);
            }
            if let Some(t) = topics.last_mut() {
                t.partitions.push(Want {
                    partition: e.partition,
                    fetch_offset: e.fetch_offset,
                    max_bytes: e.max_bytes,
                    sent: e.sent,
                    slot,
                });
            }
        }
        Plan {
            topics,
            trim,
            session: Some(PlanSession {
                id,
                generation: self.generation,
            }),
        }
    }
}

/// The cache: a map of sessions, each behind a lock of its own, so the map's lock is held
/// only to find, add or drop one, never while a session's partitions are walked (which, for
/// a consumer of thousands of partitions, is the long part of a fetch).
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<i32, Shared>>,
    /// Generations are unique across sessions, so a plan never updates a session that
    /// took the id of the one it was made for.
    generations: std::sync::atomic::AtomicU64,
}

type Shared = Arc<Mutex<Session>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    fn next_generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn get(&self, id: i32) -> Option<Shared> {
        lock(&self.sessions).get(&id).cloned()
    }

    /// How many sessions are cached.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// How many partitions the cached sessions hold, all told.
    pub fn partitions(&self) -> usize {
        let all: Vec<Shared> = lock(&self.sessions).values().cloned().collect();
        all.iter().map(|s| lock(s).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves `req`'s session (`by_id`: the request names topics by id, v13 on) into what
    /// to read: for an incremental request, the session's whole partition list; for a full
    /// one, what it names. Err: the top-level error code to answer with
    /// (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
    /// FETCH_SESSION_TOPIC_ID_ERROR).
    pub fn open(&self, req: &FetchRequest, by_id: bool, now: Instant) -> Result<Plan, i16> {
        let (id, epoch) = (req.session_id, req.session_epoch);
        match epoch {
            FINAL_EPOCH => {
                // Closing a session (or never having one): a full, sessionless fetch.
                lock(&self.sessions).remove(&id);
                Ok(Plan::whole(req))
            }
            INITIAL_EPOCH => {
                // Made before the map is locked; its id is settled under the lock.
                let mut s = Session::new(by_id, now, self.next_generation());
                s.apply(&req.topics);
                let size = s.count();
                let mut sessions = lock(&self.sessions);
                sessions.remove(&id);
                if sessions.len() >= MAX_SESSIONS && !evict_for(&mut sessions, size, now) {
                    return Ok(Plan::whole(req));
                }
                let id = loop {
                    let candidate = (Uuid::new_v4().as_u128() as i32) & i32::MAX;
                    if candidate != 0 && !sessions.contains_key(&candidate) {
                        break candidate;
                    }
                };
                let plan = s.plan(id, false);
                sessions.insert(id, Arc::new(Mutex::new(s)));
                Ok(plan)
            }
            _ if epoch < 0 => Err(INVALID_FETCH_SESSION_EPOCH),
            _ => {
                let shared = self.get(id).ok_or(FETCH_SESSION_ID_NOT_FOUND)?;
                let mut s = lock(&shared);
                if s.by_id != by_id {
                    return Err(FETCH_SESSION_TOPIC_ID_ERROR);
                }
                if epoch != s.next_epoch {
                    return Err(INVALID_FETCH_SESSION_EPOCH);
                }
                s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                s.used = now;
                s.generation = self.next_generation();
                s.apply(&req.topics);
                s.forget(&req.forgotten_topics_data);
                if s.order.is_empty() {
                    // As Kafka: a session left with nothing is closed, the answer sessionless
                    // (and empty).
                    drop(s);
                    let mut sessions = lock(&self.sessions);
                    if sessions.get(&id).is_some_and(|x| Arc::ptr_eq(x, &shared)) {
                        sessions.remove(&id);
                    }
                    return Ok(Plan::default());
                }
                Ok(s.plan(id, true))
            }
        }
    }

    /// Sets the answer's session id and remembers what the answer told of each partition
    /// (`seen`: one per partition of `plan`, in order).
    pub fn close(&self, plan: &Plan, seen: &[Seen], resp: &mut FetchResponse) {
        let Some(ps) = plan.session else {
            resp.session_id = 0;
            return;
        };
        resp.session_id = ps.id;
        // Evicted meanwhile: the next request learns the session is gone.
        let Some(shared) = self.get(ps.id) else {
            return;
        };
        let mut s = lock(&shared);
        // Opened again meanwhile, or another session under the same id: the answer to that
        // request updates it.
        if s.generation != ps.generation {
            return;
        }
        let mut moved = Vec::new();
        for (want, seen) in plan.wants().zip(seen) {
            let Some(e) = s.entries.get_mut(want.slot as usize) else {
                continue;
            };
            match seen {
                Seen::Unchanged => {}
                // After an error the next answer shows the partition again, as in Kafka.
                Seen::Error => e.sent = None,
                Seen::Read { sent, records } => {
                    e.sent = Some(*sent);
                    if *records {
                        moved.push(want.slot);
                    }
                }
            }
        }
        if !moved.is_empty() {
            let mut back = vec![false; s.entries.len()];
            for m in &moved {
                back[*m as usize] = true;
            }
            s.order.retain(|x| !back[*x as usize]);
            s.order.extend(moved);
        }
    }
}

/// Makes room for a new session of `size` partitions in a full cache, as Kafka does: the
/// least recently used session if it has been idle for [`EVICTION_AFTER`], else the smallest
/// session older than that if it is smaller than the new one. False: nothing may go.
fn evict_for(sessions: &mut HashMap<i32, Shared>, size: usize, now: Instant) -> bool {
    let aged = |t: Instant| now.saturating_duration_since(t) >= EVICTION_AFTER;
    // (id, last used, made, partitions): each session locked once, briefly.
    let all: Vec<(i32, Instant, Instant, usize)> = sessions
        .iter()
        .map(|(k, s)| {
            let s = lock(s);
            (*k, s.used, s.created, s.count())
        })
        .collect();
    let stale = all
        .iter()
        .filter(|(_, used, _, _)| aged(*used))
        .min_by_key(|(_, used, _, _)| *used)
        .map(|(k, ..)| *k);
    let victim = stale.or_else(|| {
        all.iter()
            .filter(|(_, _, created, n)| aged(*created) && *n < size)
            .min_by_key(|(.., n)| *n)
            .map(|(k, ..)| *k)
    });
    victim.is_some_and(|k| sessions.remove(&k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::FetchPartition;

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_string()))
    }

    fn request(id: i32, epoch: i32, parts: &[(&str, i32, i64)]) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (t, p, offset) in parts {
            let fp = FetchPartition::default()
                .with_partition(*p)
                .with_fetch_offset(*offset)
                .with_partition_max_bytes(1 << 20);
            match topics.iter_mut().find(|ft| ft.topic.0.as_str() == *t) {
                Some(ft) => ft.partitions.push(fp),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_partitions(vec![fp]),
                ),
            }
        }
        FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(topics)
    }

    /// What a fetch would find for `plan` with every partition at high watermark `hw` (its
    /// change count too), records in those of `with_records`, as `fetch.rs` reads: a
    /// partition it may leave unread is left unread.
    fn answer(plan: &Plan, hw: i64, with_records: &[(&str, i32)]) -> Vec<Seen> {
        let mut seen = Vec::new();
        for t in &plan.topics {
            for w in &t.partitions {
                if w.unchanged(t.id, hw as u64) {
                    seen.push(Seen::Unchanged);
                    continue;
                }
                let sent = Sent {
                    high: hw,
                    stable: hw,
                    log_start: 0,
                    changes: hw as u64,
                    topic: t.id,
                };
                let records = with_records.contains(&(t.name.0.as_str(), w.partition));
                seen.push(Seen::Read { sent, records });
            }
        }
        seen
    }

    /// The partitions the answer shows.
    fn listed(plan: &Plan, seen: &[Seen]) -> Vec<(String, i32)> {
        plan.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |w| (t, w)))
            .zip(seen)
            .filter(|((_, w), s)| plan.shows(w, s))
            .map(|((t, w), _)| (t.name.0.to_string(), w.partition))
            .collect()
    }

    fn fetched(plan: &Plan) -> Vec<(String, i32, i64)> {
        plan.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |w| (t.name.0.to_string(), w.partition, w.fetch_offset))
            })
            .collect()
    }

    /// Opens `req`, answers it as [`answer`] does and closes it: what the answer listed, and
    /// its session id.
    fn round(
        s: &Sessions,
        req: &FetchRequest,
        hw: i64,
        with_records: &[(&str, i32)],
    ) -> (Vec<(String, i32)>, i32) {
        let plan = s.open(req, false, Instant::now()).unwrap();
        let seen = answer(&plan, hw, with_records);
        let mut r = FetchResponse::default().with_session_id(99);
        s.close(&plan, &seen, &mut r);
        (listed(&plan, &seen), r.session_id)
    }

    #[test]
    fn sessionless_requests_are_answered_whole_with_session_id_zero() {
        let s = Sessions::default();
        let req = request(0, FINAL_EPOCH, &[("a", 0, 0), ("a", 1, 0)]);
        let (shown, id) = round(&s, &req, 5, &[]);
        assert_eq!(id, 0);
        assert_eq!(shown.len(), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn an_incremental_answer_carries_only_what_changed() {
        let s = Sessions::default();
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0), ("b", 0, 0)]);
        let (first, id) = round(&s, &req, 5, &[("a", 0)]);
        assert_ne!(id, 0);
        assert_eq!(first.len(), 3, "the first answer is full");

        // Only a-0 moved on; nothing changed anywhere.
        let req = request(id, 1, &[("a", 0, 5)]);
        let plan = s.open(&req, false, Instant::now()).unwrap();
        assert!(plan.trim);
        // The whole session is read, a-0 (which returned records) last, at its new offset.
        assert_eq!(
            fetched(&plan),
            vec![("a".into(), 1, 0), ("b".into(), 0, 0), ("a".into(), 0, 5)]
        );
        let seen = answer(&plan, 5, &[]);
        let mut r = FetchResponse::default();
        s.close(&plan, &seen, &mut r);
        assert_eq!(r.session_id, id);
        assert!(listed(&plan, &seen).is_empty());

        // b-0 gets records, and a new high watermark shows on every partition.
        let (got, _) = round(&s, &request(id, 2, &[]), 6, &[("b", 0)]);
        assert_eq!(got.len(), 3);
        // Then only b-0, with records again (it asks from below the high watermark); an
        // error always shows.
        let req = request(id, 3, &[("b", 0, 5)]);
        let plan = s.open(&req, false, Instant::now()).unwrap();
        let mut seen = answer(&plan, 6, &[("b", 0)]);
        let a1 = fetched(&plan).iter().position(|p| p.0 == "a" && p.1 == 1);
        seen[a1.unwrap()] = Seen::Error;
        s.close(&plan, &seen, &mut FetchResponse::default());
        let mut got = listed(&plan, &seen);
        got.sort();
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 0)]);
        // After the error a-1 is read and shown again though nothing changed.
        let plan = s
            .open(&request(id, 4, &[("b", 0, 6)]), false, Instant::now())
            .unwrap();
        let seen = answer(&plan, 6, &[]);
        assert_eq!(listed(&plan, &seen), vec![("a".into(), 1)]);
    }

    /// A caught-up partition whose change count has not moved is not read at all; one that
    /// is behind its high watermark, or whose count moved, is.
    #[test]
    fn partitions_with_nothing_new_are_left_unread() {
        let s = Sessions::default();
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 5), ("a", 1, 3)]);
        let (_, id) = round(&s, &req, 5, &[("a", 1)]);
        let plan = s
            .open(&request(id, 1, &[("a", 1, 4)]), false, Instant::now())
            .unwrap();
        let unread = |plan: &Plan, changes: u64| -> Vec<bool> {
            plan.topics[0]
                .partitions
                .iter()
                .map(|w| w.unchanged(Uuid::nil(), changes))
                .collect()
        };
        // a-0 asks from 5, its high watermark: unread. a-1 asks from 4, below it: read.
        assert_eq!(fetched(&plan)[0].1, 0);
        assert_eq!(unread(&plan, 5), vec![true, false]);
        assert_eq!(unread(&plan, 6), vec![false, false], "its count moved");
        // The same name under another topic id is another topic.
        assert!(!plan.topics[0].partitions[0].unchanged(Uuid::from_u128(1), 5));
    }

    /// An answer to a request that another request of the session overtook leaves the
    /// session alone: what it remembers was sent by the later answer.
    #[test]
    fn an_overtaken_answer_does_not_update_the_session() {
        let s = Sessions::default();
        let (_, id) = round(&s, &request(0, INITIAL_EPOCH, &[("a", 0, 0)]), 5, &[]);
        let first = s.open(&request(id, 1, &[]), false, Instant::now()).unwrap();
        let (listed2, _) = round(&s, &request(id, 2, &[]), 5, &[]);
        assert!(listed2.is_empty());
        // The first answer (at a newer high watermark) arrives late: not remembered, so
        // the next answer shows the partition.
        s.close(
            &first,
            &answer(&first, 7, &[]),
            &mut FetchResponse::default(),
        );
        let (listed3, _) = round(&s, &request(id, 3, &[]), 7, &[]);
        assert_eq!(listed3, vec![("a".into(), 0)]);
    }

    #[test]
    fn forgotten_partitions_leave_the_session_and_new_ones_join_it() {
        let s = Sessions::default();
        let now = Instant::now();
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0)]);
        let id = s.open(&req, false, now).unwrap().session.unwrap().id;
        let req = request(id, 1, &[("c", 3, 7)]).with_forgotten_topics_data(vec![
            ForgottenTopic::default()
                .with_topic(name("a"))
                .with_partitions(vec![0]),
        ]);
        let plan = s.open(&req, false, now).unwrap();
        assert_eq!(fetched(&plan), vec![("a".into(), 1, 0), ("c".into(), 3, 7)]);
        // a-0 comes back in the slot it left, at the back of the rotation.
        let req = request(id, 2, &[("a", 0, 2)]);
        let plan = s.open(&req, false, now).unwrap();
        assert_eq!(
            fetched(&plan),
            vec![("a".into(), 1, 0), ("c".into(), 3, 7), ("a".into(), 0, 2)]
        );
        assert_eq!(s.partitions(), 3);
    }

    #[test]
    fn wrong_epochs_and_unknown_sessions_are_refused() {
        let s = Sessions::default();
        let now = Instant::now();
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 0)]);
        let id = s.open(&req, false, now).unwrap().session.unwrap().id;
        let code = |r: Result<Plan, i16>| r.err();
        assert_eq!(
            code(s.open(&request(id, 2, &[]), false, now)),
            Some(INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            code(s.open(&request(id ^ 1, 1, &[]), false, now)),
            Some(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(
            code(s.open(&request(0, 1, &[]), false, now)),
            Some(FETCH_SESSION_ID_NOT_FOUND)
        );
        // A session made naming topics cannot go on by topic id, nor the other way round.
        assert_eq!(
            code(s.open(&request(id, 1, &[]), true, now)),
            Some(FETCH_SESSION_TOPIC_ID_ERROR)
        );
        // The right epoch still works once, then not again.
        assert!(s.open(&request(id, 1, &[]), false, now).is_ok());
        assert_eq!(
            code(s.open(&request(id, 1, &[]), false, now)),
            Some(INVALID_FETCH_SESSION_EPOCH)
        );
        // Epoch -1 closes it.
        let closing = s.open(&request(id, FINAL_EPOCH, &[]), false, now).unwrap();
        assert!(closing.session.is_none());
        assert_eq!(
            code(s.open(&request(id, 2, &[]), false, now)),
            Some(FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn a_session_left_without_partitions_is_closed() {
        let s = Sessions::default();
        let now = Instant::now();
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 0)]);
        let id = s.open(&req, false, now).unwrap().session.unwrap().id;
        let req = request(id, 1, &[]).with_forgotten_topics_data(vec![ForgottenTopic::default()
            .with_topic(name("a"))
            .with_partitions(vec![0])]);
        let plan = s.open(&req, false, now).unwrap();
        assert!(plan.session.is_none());
        assert!(plan.topics.is_empty());
        assert!(s.is_empty());
    }

    /// Sessions by topic id (v13 on) are keyed and forgotten by id, and their plans carry no
    /// name.
    #[test]
    fn sessions_by_topic_id_forget_by_id() {
        let s = Sessions::default();
        let now = Instant::now();
        let (x, y) = (Uuid::from_u128(7), Uuid::from_u128(8));
        let by_id = |id: Uuid, p: i32| {
            FetchTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(p)
                    .with_partition_max_bytes(1 << 20)])
        };
        let req = FetchRequest::default()
            .with_session_epoch(INITIAL_EPOCH)
            .with_topics(vec![by_id(x, 0), by_id(y, 0)]);
        let id = s.open(&req, true, now).unwrap().session.unwrap().id;
        let req = FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(1)
            .with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic_id(x)
                .with_partitions(vec![0])]);
        let plan = s.open(&req, true, now).unwrap();
        assert!(plan.trim);
        assert_eq!(plan.topics.len(), 1);
        assert_eq!(plan.topics[0].id, y);
        assert!(plan.topics[0].name.0.is_empty());
        assert_eq!(s.partitions(), 1);
    }

    /// A full cache makes room only from sessions idle for two minutes, or older ones smaller
    /// than the newcomer; otherwise the newcomer is answered without a session.
    #[test]
    fn a_full_cache_keeps_busy_sessions() {
        let s = Sessions::default();
        let start = Instant::now();
        let opened = |req: &FetchRequest, at: Instant| {
            s.open(req, false, at)
                .map(|p| p.session.map(|ps| ps.id))
                .ok()
                .flatten()
        };
        let mut ids = Vec::new();
        for i in 0..MAX_SESSIONS {
            let req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0)]);
            let at = start + Duration::from_millis(i as u64);
            ids.push(opened(&req, at).unwrap());
        }
        let soon = start + Duration::from_secs(10);
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0), ("a", 2, 0)]);
        assert_eq!(opened(&req, soon), None, "nobody is evictable yet");
        // Past two minutes everyone but session 0 (used again) is stale; the least recently
        // used of them, session 1, goes.
        let later = start + EVICTION_AFTER + Duration::from_secs(1);
        s.open(
            &request(ids[0], 1, &[]),
            false,
            later - Duration::from_millis(500),
        )
        .unwrap();
        let req = request(0, INITIAL_EPOCH, &[("a", 0, 0)]);
        assert!(opened(&req, later).is_some());
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.open(&request(ids[0], 2, &[]), false, later).is_ok());
        assert_eq!(
            s.open(&request(ids[1], 1, &[]), false, later).err(),
            Some(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert!(s.open(&request(ids[2], 1, &[]), false, later).is_ok());
    }
}
