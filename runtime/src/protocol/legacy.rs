//! Request versions Kafka 4 removed (KIP-896) but Kafka 3.9 still served, so clients of that
//! age keep working: Debian's Sarama sends OffsetCommit v1 whatever version it is told the
//! cluster runs, and with its default settings Produce v0, Fetch v0 and ListOffsets v0.
//!
//! Each old version is served as the oldest one the handlers know (`served_as`): the request
//! body is rewritten into that version's layout before it is decoded, and the answer is
//! rewritten back into the old layout after it is encoded. Both rewrites are pure functions on
//! bytes at the edge, so no handler knows old versions exist. Old record formats (message sets
//! of magic 0 and 1) are converted to v2 batches on produce and back on fetch
//! (`records::legacy`), as Kafka 3.9 did.
//!
//! Every served-as version here is below the flexible versions, so the request header (v1)
//! and the response header (v0) are the same before and after: only the version field of the
//! request header changes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::ProtocolError;
use crate::records::legacy as message_set;

/// The version an old request is served as, or `None` when `version` is not a removed one.
pub fn served_as(api: ApiKey, version: i16) -> Option<i16> {
    use ApiKey::*;
    match (api, version) {
        (Produce, 0..=2) => Some(3),
        (Fetch, 0..=3) => Some(4),
        (ListOffsets, 0) => Some(1),
        (OffsetCommit, 0..=1) => Some(2),
        (OffsetFetch, 0) => Some(1),
        (CreateTopics, 0..=1) => Some(2),
        (DeleteTopics, 0) => Some(1),
        (DescribeConfigs, 0) => Some(1),
        (DescribeAcls | CreateAcls | DeleteAcls, 0) => Some(1),
        _ => None,
    }
}

/// Kafka's LITERAL resource pattern: what version 0 of the ACL APIs meant.
const LITERAL: i8 = 3;

/// A cursor over one message, copying fields into the rewritten one.
struct Rewrite {
    from: Bytes,
    to: BytesMut,
}

type R<T> = Result<T, String>;

impl Rewrite {
    fn need(&self, n: usize) -> R<()> {
        if self.from.remaining() < n {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.from.remaining()
            ));
        }
        Ok(())
    }
    fn copy(&mut self, n: usize) -> R<()> {
        self.need(n)?;
        let b = self.from.split_to(n);
        self.to.put_slice(&b);
        Ok(())
    }
    fn skip(&mut self, n: usize) -> R<()> {
        self.need(n)?;
        self.from.advance(n);
        Ok(())
    }
    fn i8(&mut self) -> R<i8> {
        self.need(1)?;
        Ok(self.from.get_i8())
    }
    fn i16(&mut self) -> R<i16> {
        self.need(2)?;
        Ok(self.from.get_i16())
    }
    fn i32(&mut self) -> R<i32> {
        self.need(4)?;
        Ok(self.from.get_i32())
    }
    fn i64(&mut self) -> R<i64> {
        self.need(8)?;
        Ok(self.from.get_i64())
    }
    /// A (nullable) string: i16 length, -1 for null.
    fn string(&mut self) -> R<()> {
        let n = self.i16()?;
        self.to.put_i16(n);
        if n > 0 {
            self.copy(n as usize)?;
        }
        Ok(())
    }
    /// Nullable bytes: i32 length, -1 for null.
    fn take_bytes(&mut self) -> R<Option<Bytes>> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        self.need(n as usize)?;
        Ok(Some(self.from.split_to(n as usize)))
    }
    fn put_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.to.put_i32(b.len() as i32);
                self.to.put_slice(b);
            }
            None => self.to.put_i32(-1),
        }
    }
    /// An array: its count is copied, then `each` rewrites every element. A count larger
    /// than the bytes left could hold is refused before looping on it.
    fn array(&mut self, mut each: impl FnMut(&mut Self) -> R<()>) -> R<()> {
        let n = self.i32()?;
        self.to.put_i32(n);
        if n > 0 && n as usize > self.from.remaining() {
            return Err(format!("array of {n} in {} bytes", self.from.remaining()));
        }
        for _ in 0..n.max(0) {
            each(self)?;
        }
        Ok(())
    }
    /// Reads what `f` copies, but keeps none of it: a field the old version does not have.
    fn discard<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        let at = self.to.len();
        let r = f(self);
        self.to.truncate(at);
        r
    }
    fn rest(&mut self) {
        let b = std::mem::take(&mut self.from);
        self.to.put_slice(&b);
    }
}

/// Rewrites a request frame (without its length) of an old `version` into the layout of
/// `served_as(api, version)`. `now_ms` stamps records of magic 0, which carry no time.
pub fn upgrade(
    api: ApiKey,
    version: i16,
    frame: Bytes,
    now_ms: i64,
) -> Result<Bytes, ProtocolError> {
    let malformed = |reason: String| ProtocolError::Malformed {
        api,
        version,
        reason: format!("old version: {reason}"),
    };
    let to = served_as(api, version).ok_or_else(|| malformed("not a removed version".into()))?;
    let mut w = Rewrite {
        from: frame,
        to: BytesMut::new(),
    };
    (|| -> R<()> {
        // Header v1: api key, version, correlation id, client id.
        w.copy(2)?;
        w.i16()?;
        w.to.put_i16(to);
        w.copy(4)?;
        w.string()?;
        upgrade_body(&mut w, api, version, now_ms)
    })()
    .map_err(malformed)?;
    Ok(w.to.freeze())
}

fn upgrade_body(w: &mut Rewrite, api: ApiKey, version: i16, now_ms: i64) -> R<()> {
    use ApiKey::*;
    match api {
        Produce => {
            w.to.put_i16(-1); // no transactional id
            w.copy(2 + 4)?; // acks, timeout
            w.array(|w| {
                w.string()?;
                w.array(|w| {
                    w.copy(4)?;
                    let set = w.take_bytes()?;
                    let batch = match set {
                        Some(set) => match message_set::up_convert(set, now_ms) {
                            Ok(batch) => batch,
                            // Nothing, which the append refuses as CORRUPT_MESSAGE for this
                            // partition alone, as Kafka answers a bad crc.
                            Err(e) => {
                                tracing::debug!(error = %e, "old produce: unreadable message set");
                                Bytes::new()
                            }
                        },
                        None => Bytes::new(),
                    };
                    w.put_bytes(Some(&batch));
                    Ok(())
                })
            })
        }
        Fetch => {
            w.copy(4 + 4 + 4)?; // replica id, max wait, min bytes
            if version >= 3 {
                w.copy(4)?;
            } else {
                w.to.put_i32(i32::MAX); // no response limit before v3
            }
            w.to.put_i8(0); // read_uncommitted: isolation came with v4
            w.rest();
            Ok(())
        }
        ListOffsets => {
            w.copy(4)?; // replica id
            w.array(|w| {
                w.string()?;
                w.array(|w| {
                    w.copy(4 + 8)?; // partition, timestamp
                    w.skip(4) // max_num_offsets: one offset is answered
                })
            })
        }
        OffsetCommit => {
            w.string()?; // group
            if version == 0 {
                w.to.put_i32(-1); // no generation: a commit from outside the group
                w.to.put_i16(0); // member id ""
            } else {
                w.copy(4)?;
                w.string()?;
            }
            w.to.put_i64(-1); // retention: the broker's
            w.array(|w| {
                w.string()?;
                w.array(|w| {
                    w.copy(4 + 8)?; // partition, offset
                    if version == 1 {
                        w.skip(8)?; // the commit timestamp, which v2 dropped
                    }
                    w.string() // metadata
                })
            })
        }
        OffsetFetch | DeleteTopics => {
            w.rest();
            Ok(())
        }
        CreateTopics => {
            w.rest();
            if version == 0 {
                w.to.put_i8(0); // validate_only came with v1
            }
            Ok(())
        }
        DescribeConfigs => {
            w.rest();
            w.to.put_i8(0); // include_synonyms came with v1
            Ok(())
        }
        DescribeAcls => {
            w.copy(1)?;
            w.string()?;
            w.to.put_i8(LITERAL);
            w.rest();
            Ok(())
        }
        CreateAcls | DeleteAcls => w.array(|w| {
            w.copy(1)?;
            w.string()?;
            w.to.put_i8(LITERAL);
            w.string()?;
            w.string()?;
            w.copy(2)
        }),
        _ => Err(format!("{api:?} v{version} has no rewrite")),
    }
}

/// Rewrites an encoded response (length prefix, header v0, body) of the served-as version
/// into the layout of the `version` the client asked for.
pub fn downgrade(api: ApiKey, version: i16, resp: BytesMut) -> Result<BytesMut, ProtocolError> {
    let mut w = Rewrite {
        from: resp.freeze(),
        to: BytesMut::new(),
    };
    (|| -> R<()> {
        w.skip(4)?; // the length, redone below
        w.to.put_i32(0);
        w.copy(4)?; // correlation id
        downgrade_body(&mut w, api, version)
    })()
    .map_err(|reason| ProtocolError::Encode {
        api,
        version,
        reason: format!("old version: {reason}"),
    })?;
    let len = (w.to.len() - 4) as i32;
    w.to[..4].copy_from_slice(&len.to_be_bytes());
    Ok(w.to)
}

fn downgrade_body(w: &mut Rewrite, api: ApiKey, version: i16) -> R<()> {
    use ApiKey::*;
    match api {
        Produce => {
            w.array(|w| {
                w.string()?;
                w.array(|w| {
                    w.copy(4 + 2 + 8)?; // partition, error, base offset
                    if version >= 2 {
                        w.copy(8) // log-append time
                    } else {
                        w.skip(8)
                    }
                })
            })?;
            if version >= 1 {
                w.copy(4)?; // throttle time, last before v3 too
            } else {
                w.skip(4)?;
            }
            Ok(())
        }
        Fetch => {
            let throttle = w.i32()?;
            if version >= 1 {
                w.to.put_i32(throttle);
            }
            let magic = if version >= 2 { 1 } else { 0 };
            w.array(|w| {
                w.string()?;
                w.array(|w| {
                    w.copy(4 + 2 + 8)?; // partition, error, high watermark
                    w.skip(8)?; // last stable offset
                    let aborted = w.i32()?;
                    w.skip(aborted.max(0) as usize * 16)?;
                    let records = w.take_bytes()?.unwrap_or_default();
                    let set = message_set::down_convert(records, magic);
                    w.put_bytes(Some(&set));
                    Ok(())
                })
            })
        }
        ListOffsets => w.array(|w| {
            w.string()?;
            w.array(|w| {
                w.copy(4)?;
                let error = w.i16()?;
                w.to.put_i16(error);
                w.skip(8)?; // timestamp
                let offset = w.i64()?;
                if error == 0 && offset >= 0 {
                    w.to.put_i32(1);
                    w.to.put_i64(offset);
                } else {
                    w.to.put_i32(0);
                }
                Ok(())
            })
        }),
        OffsetCommit | OffsetFetch | CreateAcls => {
            w.rest();
            Ok(())
        }
        CreateTopics => {
            w.skip(4)?; // throttle time came with v2
            w.array(|w| {
                w.string()?;
                w.copy(2)?;
                if version >= 1 {
                    w.string()
                } else {
                    w.discard(Rewrite::string) // the error message came with v1
                }
            })
        }
        DeleteTopics => {
            w.skip(4)?; // throttle time came with v1
            w.rest();
            Ok(())
        }
        DescribeConfigs => {
            w.copy(4)?;
            w.array(|w| {
                w.copy(2)?; // error
                w.string()?; // message
                w.copy(1)?; // resource type
                w.string()?; // name
                w.array(|w| {
                    w.string()?; // name
                    w.string()?; // value
                    w.copy(1)?; // read only
                    let source = w.i8()?;
                    // Version 0 knew only "default or not": a value set on the topic or the
                    // broker at run time is not a default; the rest are.
                    w.to.put_i8(i8::from(!matches!(source, 1..=3)));
                    w.copy(1)?; // sensitive
                                // Synonyms came with v1.
                    w.discard(|w| {
                        w.array(|w| {
                            w.string()?;
                            w.string()?;
                            w.copy(1)
                        })
                    })
                })
            })
        }
        DescribeAcls => {
            w.copy(4 + 2)?; // throttle, error
            w.string()?;
            w.array(|w| {
                w.copy(1)?;
                w.string()?;
                w.skip(1)?; // pattern type
                w.array(|w| {
                    w.string()?;
                    w.string()?;
                    w.copy(2)
                })
            })
        }
        DeleteAcls => {
            w.copy(4)?;
            w.array(|w| {
                w.copy(2)?;
                w.string()?;
                w.array(|w| {
                    w.copy(2)?;
                    w.string()?;
                    w.copy(1)?;
                    w.string()?;
                    w.skip(1)?; // pattern type
                    w.string()?;
                    w.string()?;
                    w.copy(2)
                })
            })
        }
        _ => Err(format!("{api:?} v{version} has no rewrite")),
    }
}
