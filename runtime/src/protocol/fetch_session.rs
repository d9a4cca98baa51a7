//! Fetch sessions (KIP-227): a consumer with many partitions names them once, then sends
//! only what changed (new fetch offsets, partitions added or forgotten), and each answer
//! carries only the partitions that have something to say. Without them a consumer of 1,000
//! partitions sends and receives 1,000 entries on every fetch, most of them empty.
//!
//! I/O-free: [`Sessions::open`] turns a request into the full partition list to read (and
//! says which session the answer belongs to); [`Sessions::close`] trims the answer and
//! remembers what it told the client. The fetch itself (`fetch.rs`) reads as for any full
//! request.
//!
//! Invariants:
//! - A session answers an incremental request only at the epoch it expects next, so a
//!   request replayed or sent twice gets INVALID_FETCH_SESSION_EPOCH, never a trimmed answer
//!   computed against state the client never saw.
//! - A partition is left out of an incremental answer only when it has no records and no
//!   error, and its high watermark, last stable offset and log start offset are the ones the
//!   session last sent. Partitions with records are never dropped, so the file ranges that
//!   stand for records (`pieces.rs`) keep their order.
//! - The cache holds at most [`MAX_SESSIONS`]. As in Kafka, a new session takes the place of
//!   one idle for [`EVICTION_AFTER`], else of an older one with fewer partitions; failing
//!   both it is not made and the answer is sessionless. A busy consumer's session is never
//!   thrown out for a newcomer's (a client that opens a session on every fetch would
//!   otherwise flush everyone's). An evicted session's next request gets
//!   FETCH_SESSION_ID_NOT_FOUND and the client starts again with a full request: a round
//!   trip, never records.
//! - Nothing cached points into a request's buffer (decoded names and tagged fields do), so a
//!   session holds only its own bytes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
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

/// A topic in a session: (topic id, topic name). Requests from v13 on name topics by id
/// (the name is empty), older ones by name (the id is nil). Partitions hang below it, so an
/// answer's partitions are found without a string per partition.
type TopicKey = (Uuid, String);

struct Entry {
    /// Order in the next read: a partition that returned records goes to the back, so under
    /// a byte limit the others get their turn (as Kafka does).
    rank: u64,
    wanted: FetchPartition,
    /// What the session last told the client (-1: nothing yet).
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

struct Session {
    /// Never holds a topic without partitions.
    parts: HashMap<TopicKey, HashMap<i32, Entry>>,
    next_rank: u64,
    /// The epoch the next incremental request must carry.
    next_epoch: i32,
    /// Whether its requests name topics by id (Fetch v13 on).
    by_id: bool,
    created: Instant,
    used: Instant,
}

impl Session {
    fn new(by_id: bool, now: Instant) -> Session {
        Session {
            parts: HashMap::new(),
            next_rank: 0,
            next_epoch: 1,
            by_id,
            created: now,
            used: now,
        }
    }

    fn count(&self) -> usize {
        self.parts.values().map(HashMap::len).sum()
    }

    /// Adds or updates the partitions a request names (keeping what was last sent of
    /// those already in).
    fn apply(&mut self, topics: &[FetchTopic]) {
        for t in topics {
            if t.partitions.is_empty() {
                continue;
            }
            let topic = self
                .parts
                .entry((t.topic_id, t.topic.0.to_string()))
                .or_default();
            for p in &t.partitions {
                // Tagged fields are slices of the request's buffer.
                let mut wanted = p.clone();
                wanted.unknown_tagged_fields.clear();
                match topic.get_mut(&p.partition) {
                    Some(e) => e.wanted = wanted,
                    None => {
                        topic.insert(
                            p.partition,
                            Entry {
                                rank: self.next_rank,
                                wanted,
                                high_watermark: -1,
                                last_stable_offset: -1,
                                log_start_offset: -1,
                            },
                        );
                        self.next_rank += 1;
                    }
                }
            }
        }
    }

    /// Every partition of the session, as a full request's topic list, in rank order: a
    /// topic appears again wherever another's partition came between (Kafka's answers do
    /// the same), so the rotation holds across topics too.
    fn topics(&self) -> Vec<FetchTopic> {
        let mut entries: Vec<(&TopicKey, &Entry)> = self
            .parts
            .iter()
            .flat_map(|(k, ps)| ps.values().map(move |e| (k, e)))
            .collect();
        entries.sort_by_key(|(_, e)| e.rank);
        let mut out: Vec<FetchTopic> = Vec::new();
        for ((id, name), e) in entries {
            let same = out
                .last()
                .is_some_and(|t| t.topic_id == *id && t.topic.0.as_str() == name.as_str());
            if !same {
                // An owned name: the request's points into its buffer.
                let topic = TopicName(StrBytes::from_string(name.clone()));
                out.push(FetchTopic::default().with_topic(topic).with_topic_id(*id));
            }
            if let Some(t) = out.last_mut() {
                t.partitions.push(e.wanted.clone());
            }
        }
        out
    }
}

/// Which session an answer belongs to, from [`Sessions::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// No session (epoch -1, or versions before 7): the answer is full, session id 0.
    None,
    /// A session made by this full request (a full cache with nothing evictable answers
    /// [`Opened::None`] instead).
    New(i32),
    /// An incremental request in session `id`: the answer is trimmed.
    Incremental(i32),
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<i32, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many sessions are cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// How many partitions the cached sessions hold, all told.
    pub fn partitions(&self) -> usize {
        self.lock().values().map(Session::count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves `req`'s session (`by_id`: the request names topics by id, v13 on). For an
    /// incremental request, `req.topics` becomes the session's whole partition list; a full
    /// request is left as it is. Err: the top-level error code to answer with
    /// (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
    /// FETCH_SESSION_TOPIC_ID_ERROR).
    pub fn open(&self, req: &mut FetchRequest, by_id: bool, now: Instant) -> Result<Opened, i16> {
        let mut sessions = self.lock();
        let (id, epoch) = (req.session_id, req.session_epoch);
        match epoch {
            FINAL_EPOCH => {
                // Closing a session (or never having one): a full, sessionless fetch.
                sessions.remove(&id);
                Ok(Opened::None)
            }
            INITIAL_EPOCH => {
                sessions.remove(&id);
                let size = req.topics.iter().map(|t| t.partitions.len()).sum();
                if sessions.len() >= MAX_SESSIONS && !evict_for(&mut sessions, size, now) {
                    return Ok(Opened::None);
                }
                let id = loop {
                    let candidate = (Uuid::new_v4().as_u128() as i32) & i32::MAX;
                    if candidate != 0 && !sessions.contains_key(&candidate) {
                        break candidate;
                    }
                };
                let mut s = Session::new(by_id, now);
                s.apply(&req.topics);
                sessions.insert(id, s);
                Ok(Opened::New(id))
            }
            _ if epoch < 0 => Err(INVALID_FETCH_SESSION_EPOCH),
            _ => {
                let s = sessions.get_mut(&id).ok_or(FETCH_SESSION_ID_NOT_FOUND)?;
                if s.by_id != by_id {
                    return Err(FETCH_SESSION_TOPIC_ID_ERROR);
                }
                if epoch != s.next_epoch {
                    return Err(INVALID_FETCH_SESSION_EPOCH);
                }
                s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                s.used = now;
                s.apply(&req.topics);
                for f in &req.forgotten_topics_data {
                    let key = (f.topic_id, f.topic.0.to_string());
                    if let Some(t) = s.parts.get_mut(&key) {
                        for p in &f.partitions {
                            t.remove(p);
                        }
                        if t.is_empty() {
                            s.parts.remove(&key);
                        }
                    }
                }
                if s.parts.is_empty() {
                    // As Kafka: a session left with nothing is closed, the answer sessionless.
                    sessions.remove(&id);
                    req.topics.clear();
                    return Ok(Opened::None);
                }
                req.topics = s.topics();
                Ok(Opened::Incremental(id))
            }
        }
    }

    /// Sets the answer's session id, remembers what it tells the client and, for an
    /// incremental request, leaves out the partitions with nothing new.
    pub fn close(&self, opened: Opened, resp: &mut FetchResponse) {
        let id = match opened {
            Opened::None => {
                resp.session_id = 0;
                return;
            }
            Opened::New(id) | Opened::Incremental(id) => id,
        };
        resp.session_id = id;
        let mut sessions = self.lock();
        // Evicted meanwhile: the answer stays full; the next request learns the session is
        // gone.
        let Some(s) = sessions.get_mut(&id) else {
            return;
        };
        let trim = matches!(opened, Opened::Incremental(_));
        let next_rank = &mut s.next_rank;
        for t in &mut resp.responses {
            let Some(cached) = s.parts.get_mut(&(t.topic_id, t.topic.0.to_string())) else {
                continue;
            };
            t.partitions.retain(|p| {
                let has_records = p.records.as_ref().is_some_and(|r| !r.is_empty());
                let Some(e) = cached.get_mut(&p.partition_index) else {
                    return true;
                };
                let changed = e.high_watermark != p.high_watermark
                    || e.last_stable_offset != p.last_stable_offset
                    || e.log_start_offset != p.log_start_offset;
                // After an error the next answer shows the partition again, as in Kafka.
                e.high_watermark = if p.error_code != 0 {
                    -1
                } else {
                    p.high_watermark
                };
                e.last_stable_offset = p.last_stable_offset;
                e.log_start_offset = p.log_start_offset;
                if has_records {
                    e.rank = *next_rank;
                    *next_rank += 1;
                }
                !trim || has_records || changed || p.error_code != 0
            });
        }
        if trim {
            resp.responses.retain(|t| !t.partitions.is_empty());
        }
    }
}

/// Makes room for a new session of `size` partitions in a full cache, as Kafka does: the
/// least recently used session if it has been idle for [`EVICTION_AFTER`], else the smallest
/// session older than that if it is smaller than the new one. False: nothing may go.
fn evict_for(sessions: &mut HashMap<i32, Session>, size: usize, now: Instant) -> bool {
    let aged = |t: Instant| now.saturating_duration_since(t) >= EVICTION_AFTER;
    let stale = sessions
        .iter()
        .filter(|(_, s)| aged(s.used))
        .min_by_key(|(_, s)| s.used)
        .map(|(k, _)| *k);
    let victim = stale.or_else(|| {
        sessions
            .iter()
            .filter(|(_, s)| aged(s.created) && s.count() < size)
            .min_by_key(|(_, s)| s.count())
            .map(|(k, _)| *k)
    });
    victim.is_some_and(|k| sessions.remove(&k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_request::ForgottenTopic;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::StrBytes;

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

    /// What the fetch would answer for `req`: every partition at high watermark `hw`, with
    /// one record's worth of bytes for those in `with_records`.
    fn answer(req: &FetchRequest, hw: i64, with_records: &[(&str, i32)]) -> FetchResponse {
        let mut r = FetchResponse::default();
        for t in &req.topics {
            let mut tr = FetchableTopicResponse::default().with_topic(t.topic.clone());
            for p in &t.partitions {
                let records = with_records
                    .contains(&(t.topic.0.as_str(), p.partition))
                    .then(|| Bytes::from_static(b"x"))
                    .or(Some(Bytes::new()));
                tr.partitions.push(
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_high_watermark(hw)
                        .with_last_stable_offset(hw)
                        .with_log_start_offset(0)
                        .with_records(records),
                );
            }
            r.responses.push(tr);
        }
        r
    }

    fn listed(r: &FetchResponse) -> Vec<(String, i32)> {
        r.responses
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), p.partition_index))
            })
            .collect()
    }

    fn fetched(req: &FetchRequest) -> Vec<(String, i32, i64)> {
        req.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
            })
            .collect()
    }

    #[test]
    fn sessionless_requests_are_answered_whole_with_session_id_zero() {
        let s = Sessions::default();
        let mut req = request(0, FINAL_EPOCH, &[("a", 0, 0), ("a", 1, 0)]);
        let opened = s.open(&mut req, false, Instant::now()).unwrap();
        assert_eq!(opened, Opened::None);
        let mut r = answer(&req, 5, &[]);
        r.session_id = 99;
        s.close(opened, &mut r);
        assert_eq!(r.session_id, 0);
        assert_eq!(listed(&r).len(), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn an_incremental_answer_carries_only_what_changed() {
        let s = Sessions::default();
        let now = Instant::now();
        let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0), ("b", 0, 0)]);
        let opened = s.open(&mut req, false, now).unwrap();
        let Opened::New(id) = opened else {
            panic!("{opened:?}")
        };
        assert_ne!(id, 0);
        let mut r = answer(&req, 5, &[("a", 0)]);
        s.close(opened, &mut r);
        assert_eq!(r.session_id, id);
        assert_eq!(listed(&r).len(), 3, "the first answer is full");

        // Only a-0 moved on; nothing changed anywhere.
        let mut req = request(id, 1, &[("a", 0, 5)]);
        let opened = s.open(&mut req, false, now).unwrap();
        assert_eq!(opened, Opened::Incremental(id));
        // The whole session is read, a-0 (which returned records) last, at its new offset.
        assert_eq!(
            fetched(&req),
            vec![("a".into(), 1, 0), ("b".into(), 0, 0), ("a".into(), 0, 5)]
        );
        let mut r = answer(&req, 5, &[]);
        s.close(opened, &mut r);
        assert_eq!(r.session_id, id);
        assert!(r.responses.is_empty(), "{:?}", listed(&r));

        // b-0 gets records, and a new high watermark shows on every partition.
        let mut req = request(id, 2, &[]);
        let opened = s.open(&mut req, false, now).unwrap();
        let mut r = answer(&req, 6, &[("b", 0)]);
        s.close(opened, &mut r);
        assert_eq!(listed(&r).len(), 3);
        // Then only b-0, with records again; an error always shows.
        let mut req = request(id, 3, &[("b", 0, 6)]);
        let opened = s.open(&mut req, false, now).unwrap();
        let mut r = answer(&req, 6, &[("b", 0)]);
        r.responses[0].partitions[0].error_code = 1;
        s.close(opened, &mut r);
        let mut got = listed(&r);
        got.sort();
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 0)]);
    }

    #[test]
    fn forgotten_partitions_leave_the_session_and_new_ones_join_it() {
        let s = Sessions::default();
        let now = Instant::now();
        let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0)]);
        let Ok(Opened::New(id)) = s.open(&mut req, false, now) else {
            panic!()
        };
        let mut req = request(id, 1, &[("c", 3, 7)]).with_forgotten_topics_data(vec![
            ForgottenTopic::default()
                .with_topic(name("a"))
                .with_partitions(vec![0]),
        ]);
        s.open(&mut req, false, now).unwrap();
        assert_eq!(fetched(&req), vec![("a".into(), 1, 0), ("c".into(), 3, 7)]);
    }

    #[test]
    fn wrong_epochs_and_unknown_sessions_are_refused() {
        let s = Sessions::default();
        let now = Instant::now();
        let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0)]);
        let Ok(Opened::New(id)) = s.open(&mut req, false, now) else {
            panic!()
        };
        assert_eq!(
            s.open(&mut request(id, 2, &[]), false, now),
            Err(INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            s.open(&mut request(id ^ 1, 1, &[]), false, now),
            Err(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(
            s.open(&mut request(0, 1, &[]), false, now),
            Err(FETCH_SESSION_ID_NOT_FOUND)
        );
        // A session made naming topics cannot go on by topic id, nor the other way round.
        assert_eq!(
            s.open(&mut request(id, 1, &[]), true, now),
            Err(FETCH_SESSION_TOPIC_ID_ERROR)
        );
        // The right epoch still works once, then not again.
        assert!(s.open(&mut request(id, 1, &[]), false, now).is_ok());
        assert_eq!(
            s.open(&mut request(id, 1, &[]), false, now),
            Err(INVALID_FETCH_SESSION_EPOCH)
        );
        // Epoch -1 closes it.
        assert_eq!(
            s.open(&mut request(id, FINAL_EPOCH, &[]), false, now),
            Ok(Opened::None)
        );
        assert_eq!(
            s.open(&mut request(id, 2, &[]), false, now),
            Err(FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn a_session_left_without_partitions_is_closed() {
        let s = Sessions::default();
        let now = Instant::now();
        let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0)]);
        let Ok(Opened::New(id)) = s.open(&mut req, false, now) else {
            panic!()
        };
        let mut req =
            request(id, 1, &[]).with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic(name("a"))
                .with_partitions(vec![0])]);
        assert_eq!(s.open(&mut req, false, now), Ok(Opened::None));
        assert!(req.topics.is_empty());
        assert!(s.is_empty());
    }

    /// Sessions by topic id (v13 on) are keyed and forgotten by id, and their rebuilt
    /// requests carry no name.
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
        let mut req = FetchRequest::default()
            .with_session_epoch(INITIAL_EPOCH)
            .with_topics(vec![by_id(x, 0), by_id(y, 0)]);
        let Ok(Opened::New(id)) = s.open(&mut req, true, now) else {
            panic!()
        };
        let mut req = FetchRequest::default()
            .with_session_id(id)
            .with_session_epoch(1)
            .with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic_id(x)
                .with_partitions(vec![0])]);
        assert_eq!(s.open(&mut req, true, now), Ok(Opened::Incremental(id)));
        assert_eq!(req.topics.len(), 1);
        assert_eq!(req.topics[0].topic_id, y);
        assert!(req.topics[0].topic.0.is_empty());
        assert_eq!(s.partitions(), 1);
    }

    /// A full cache makes room only from sessions idle for two minutes, or older ones smaller
    /// than the newcomer; otherwise the newcomer is answered without a session.
    #[test]
    fn a_full_cache_keeps_busy_sessions() {
        let s = Sessions::default();
        let start = Instant::now();
        let mut ids = Vec::new();
        for i in 0..MAX_SESSIONS {
            let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0)]);
            let at = start + Duration::from_millis(i as u64);
            let Ok(Opened::New(id)) = s.open(&mut req, false, at) else {
                panic!()
            };
            ids.push(id);
        }
        let soon = start + Duration::from_secs(10);
        let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0), ("a", 1, 0), ("a", 2, 0)]);
        assert_eq!(
            s.open(&mut req, false, soon),
            Ok(Opened::None),
            "nobody is evictable yet"
        );
        // Past two minutes everyone but session 0 (used again) is stale; the least recently
        // used of them, session 1, goes.
        let later = start + EVICTION_AFTER + Duration::from_secs(1);
        s.open(
            &mut request(ids[0], 1, &[]),
            false,
            later - Duration::from_millis(500),
        )
        .unwrap();
        let mut req = request(0, INITIAL_EPOCH, &[("a", 0, 0)]);
        assert!(matches!(s.open(&mut req, false, later), Ok(Opened::New(_))));
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.open(&mut request(ids[0], 2, &[]), false, later).is_ok());
        assert_eq!(
            s.open(&mut request(ids[1], 1, &[]), false, later),
            Err(FETCH_SESSION_ID_NOT_FOUND)
        );
        assert!(s.open(&mut request(ids[2], 1, &[]), false, later).is_ok());
    }
}
