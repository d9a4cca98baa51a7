//! Client quotas, as Kafka defines them (KIP-13, KIP-124, KIP-55, KIP-546): byte rates for
//! produce and fetch and a share of request-handling time, set per user, per client id, or
//! per (user, client id), each with defaults, and enforced by throttling: the response carries
//! `throttle_time_ms` and the connection is muted that long after it (KIP-219).
//!
//! Which quota applies to a request from user U with client id C is the first entity, in
//! Kafka's order, that sets the key: (U, C), (U, default client), (U), (default user, C),
//! (default user, default client), (default user), (C), (default client). Usage is counted per
//! entity *as matched*: a quota on user U is shared by all of U's clients; a default quota
//! gives every user (or client) its own allowance of that size.
//!
//! Usage is a token bucket per (entity, key) holding at most one second of the quota: a
//! request that takes it below zero is throttled for as long as the refill takes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::disk::json::{self, JsonFileError};

pub const FILE: &str = "client-quotas.json";

/// The longest one request is throttled for; a client far over its quota is throttled again
/// on its next request.
const MAX_THROTTLE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    ProducerByteRate,
    ConsumerByteRate,
    RequestPercentage,
    /// Producer ids a client may have the broker mint per second (KIP-936's name): each
    /// InitProducerId that allocates one counts 1, so one client churning ids is throttled
    /// on its own, before it makes the partitions' per-partition cap forget other clients'.
    ProducerIdsRate,
}

impl Key {
    pub const ALL: [Key; 4] = [
        Key::ProducerByteRate,
        Key::ConsumerByteRate,
        Key::RequestPercentage,
        Key::ProducerIdsRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Key::ProducerByteRate => "producer_byte_rate",
            Key::ConsumerByteRate => "consumer_byte_rate",
            Key::RequestPercentage => "request_percentage",
            Key::ProducerIdsRate => "producer_ids_rate",
        }
    }

    pub fn from_name(s: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Units per second the quota's value allows: bytes, or microseconds of handling time.
    fn per_second(self, value: f64) -> f64 {
        match self {
            Key::RequestPercentage => value / 100.0 * 1e6,
            _ => value,
        }
    }
}

/// One entity: `user` and `client-id` components, each absent, default (`None`) or named.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub client_id: Option<Option<String>>,
}

impl Entity {
    pub fn components(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::new();
        if let Some(u) = &self.user {
            out.push(("user", u.as_deref()));
        }
        if let Some(c) = &self.client_id {
            out.push(("client-id", c.as_deref()));
        }
        out
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Stored {
    entity: Entity,
    values: BTreeMap<String, f64>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Quotas {
    path: PathBuf,
    table: RwLock<BTreeMap<Entity, BTreeMap<Key, f64>>>,
    buckets: Mutex<HashMap<(Entity, Key), Bucket>>,
    write: Mutex<()>,
}

/// One change of AlterClientQuotas: set (Some) or remove (None) a key on an entity.
pub type Change = (Entity, Key, Option<f64>);

impl Quotas {
    pub fn open(data_dir: &Path) -> Result<Quotas, JsonFileError> {
        let path = data_dir.join(FILE);
        let stored: Vec<Stored> = json::load(&path)?;
        let table = stored
            .into_iter()
            .map(|s| {
                let values: BTreeMap<Key, f64> = s
                    .values
                    .iter()
                    .filter_map(|(k, v)| Key::from_name(k).map(|k| (k, *v)))
                    .collect();
                (s.entity, values)
            })
            .collect();
        Ok(Quotas {
            path,
            table: RwLock::new(table),
            buckets: Mutex::default(),
            write: Mutex::default(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn all(&self) -> Vec<(Entity, BTreeMap<Key, f64>)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.iter().map(|(e, v)| (e.clone(), v.clone())).collect()
    }

    /// Applies the changes and writes the file before returning.
    pub fn alter(&self, changes: &[Change]) -> Result<(), JsonFileError> {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        for (entity, key, value) in changes {
            match value {
                Some(v) => {
                    next.entry(entity.clone()).or_default().insert(*key, *v);
                }
                None => {
                    if let Some(m) = next.get_mut(entity) {
                        m.remove(key);
                        if m.is_empty() {
                            next.remove(entity);
                        }
                    }
                }
            }
        }
        let stored: Vec<Stored> = next
            .iter()
            .map(|(e, v)| Stored {
                entity: e.clone(),
                values: v.iter().map(|(k, v)| (k.name().to_string(), *v)).collect(),
            })
            .collect();
        json::store(&self.path, &stored)?;
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = next;
        // Usage counted against entities that changed starts over.
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        Ok(())
    }

    /// The quota that applies to (user, client id) for `key`, and the entity usage is counted
    /// against, in Kafka's order of precedence.
    pub fn resolve(&self, user: &str, client: &str, key: Key) -> Option<(Entity, f64)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let named = |s: &str| Some(Some(s.to_string()));
        let dflt = Some(None);
        // (entity as stored, entity usage is counted against)
        let order = [
            (
                Entity {
                    user: named(user),
                    client_id: named(client),
                },
                (true, true),
            ),
            (
                Entity {
                    user: named(user),
                    client_id: dflt.clone(),
                },
                (true, true),
            ),
            (
                Entity {
                    user: named(user),
                    client_id: None,
                },
                (true, false),
            ),
            (
                Entity {
                    user: dflt.clone(),
                    client_id: named(client),
                },
                (true, true),
            ),
            (
                Entity {
                    user: dflt.clone(),
                    client_id: dflt.clone(),
                },
                (true, true),
            ),
            (
                Entity {
                    user: dflt.clone(),
                    client_id: None,
                },
                (true, false),
            ),
            (
                Entity {
                    user: None,
                    client_id: named(client),
                },
                (false, true),
            ),
            (
                Entity {
                    user: None,
                    client_id: dflt,
                },
                (false, true),
            ),
        ];
        for (e, (by_user, by_client)) in order {
            if let Some(v) = t.get(&e).and_then(|m| m.get(&key)) {
                let counted = Entity {
                    user: by_user.then(|| Some(user.to_string())),
                    client_id: by_client.then(|| Some(client.to_string())),
                };
                return Some((counted, *v));
            }
        }
        None
    }

    /// Counts `amount` (bytes, or microseconds for request_percentage) against the quota
    /// that applies; the throttle the request earns (zero when within the quota).
    pub fn charge(
        &self,
        user: &str,
        client: &str,
        key: Key,
        amount: f64,
        now: Instant,
    ) -> Duration {
        let Some((entity, value)) = self.resolve(user, client, key) else {
            return Duration::ZERO;
        };
        let rate = key.per_second(value);
        if rate <= 0.0 {
            return MAX_THROTTLE;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry((entity, key)).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate) - amount;
        b.at = now;
        if b.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-b.tokens / rate).min(MAX_THROTTLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(user: Option<Option<&str>>, client: Option<Option<&str>>) -> Entity {
        Entity {
            user: user.map(|u| u.map(str::to_string)),
            client_id: client.map(|c| c.map(str::to_string)),
        }
    }

    #[test]
    fn kafka_precedence_and_who_shares_a_quota() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path()).unwrap();
        q.alter(&[
            (e(None, Some(None)), Key::ProducerByteRate, Some(100.0)),
            (
                e(Some(Some("alice")), None),
                Key::ProducerByteRate,
                Some(200.0),
            ),
            (
                e(Some(Some("alice")), Some(Some("app"))),
                Key::ProducerByteRate,
                Some(300.0),
            ),
        ])
        .unwrap();
        assert_eq!(
            q.resolve("alice", "app", Key::ProducerByteRate).unwrap().1,
            300.0
        );
        let (shared, v) = q.resolve("alice", "other", Key::ProducerByteRate).unwrap();
        assert_eq!(
            (v, shared.client_id),
            (200.0, None),
            "alice's clients share her quota"
        );
        let (own, v) = q.resolve("bob", "x", Key::ProducerByteRate).unwrap();
        assert_eq!(v, 100.0);
        assert_eq!(
            own.client_id,
            Some(Some("x".into())),
            "each client its own default"
        );
        assert!(q.resolve("bob", "x", Key::ConsumerByteRate).is_none());
        let again = Quotas::open(dir.path()).unwrap();
        assert_eq!(again.all().len(), 3);
        again
            .alter(&[(e(None, Some(None)), Key::ProducerByteRate, None)])
            .unwrap();
        assert!(again.resolve("bob", "x", Key::ProducerByteRate).is_none());
    }

    #[test]
    fn a_bucket_throttles_for_the_time_its_refill_takes() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quotas::open(dir.path()).unwrap();
        q.alter(&[(e(None, Some(None)), Key::ProducerByteRate, Some(1000.0))])
            .unwrap();
        let t0 = Instant::now();
        assert_eq!(
            q.charge("u", "c", Key::ProducerByteRate, 1000.0, t0),
            Duration::ZERO
        );
        let t = q.charge("u", "c", Key::ProducerByteRate, 500.0, t0);
        assert_eq!(t.as_millis(), 500);
        // Half a second later the debt is paid; another client has its own allowance.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(
            q.charge("u", "c", Key::ProducerByteRate, 0.0, t1),
            Duration::ZERO
        );
        assert_eq!(
            q.charge("u", "d", Key::ProducerByteRate, 1000.0, t1),
            Duration::ZERO
        );
    }
}
