use std::fmt::Display;
use std::rc::Rc;

use serde::de::DeserializeOwned;

/// Kafka record headers: names may repeat; order is kept.
pub type Headers = Vec<(String, Vec<u8>)>;

/// One input record, with the topic and partition it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    // Shared by every record of a batch instead of copied into each.
    topic: Rc<str>,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Headers,
}

impl Record {
    /// A record with this value, for tests: topic "test", partition 0, offset 0, timestamp 0,
    /// no key, no headers. The `with_*` methods set the rest.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            topic: Rc::from("test"),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    pub(crate) fn from_parts(
        topic: Rc<str>,
        partition: i32,
        offset: i64,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Headers,
    ) -> Self {
        Record {
            topic,
            partition,
            offset,
            timestamp,
            key,
            value,
            headers,
        }
    }

    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// A record without a value: a tombstone on a compacted topic.
    pub fn without_value(mut self) -> Self {
        self.value = None;
        self
    }
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn with_topic(mut self, topic: &str, partition: i32) -> Self {
        self.topic = Rc::from(topic);
        self.partition = partition;
        self
    }
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }
    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = timestamp_ms;
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
    pub fn partition(&self) -> i32 {
        self.partition
    }
    pub fn offset(&self) -> i64 {
        self.offset
    }
    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    /// The key as text; `None` when there is no key or it is not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }
    /// The value as text; `None` when there is no value or it is not UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        self.value().and_then(|v| std::str::from_utf8(v).ok())
    }
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
    /// The first header with this name, as text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
    /// The value decoded as JSON. The error reads well as a dead-letter reason.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        let v = self.value().ok_or("record has no value")?;
        serde_json::from_slice(v).map_err(|e| format!("value is not the expected JSON: {e}"))
    }

    /// An output with this record's key, value and headers, to change before emitting.
    /// Its timestamp stays unset, which the host reads as "the input record's".
    pub fn to_output(&self) -> Output {
        Output {
            topic: None,
            key: self.key.clone(),
            value: self.value.clone(),
            headers: self.headers.clone(),
            timestamp: None,
        }
    }
}

/// A record to emit. Built with [`Output::value`] or [`Record::to_output`], then the
/// builder methods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// `None`: the pipeline's default output topic.
    pub topic: Option<String>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Headers,
    /// `None`: the input record's timestamp (or the tick's time, from `tick`).
    pub timestamp: Option<i64>,
}

impl Output {
    /// An output with this value and nothing else set.
    pub fn value(value: impl Into<Vec<u8>>) -> Self {
        Output {
            value: Some(value.into()),
            ..Output::default()
        }
    }
    /// An output without a value: a tombstone.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Self {
        Output {
            key: Some(key.into()),
            ..Output::default()
        }
    }

    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }
    /// Adds a header (names may repeat).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// What becomes of one input record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forward the record unchanged to the default output topic.
    Keep,
    /// Forward nothing.
    Drop,
    /// Emit these records in its place: none, one, or many.
    Emit(Vec<Output>),
    /// Send the record to the dead-letter topic with this reason.
    Fail(String),
    /// Try the record again after the pipeline's backoff; after its last attempt it goes to
    /// the dead-letter topic with this reason.
    Retry(String),
}

impl Outcome {
    pub fn keep_if(keep: bool) -> Self {
        if keep {
            Outcome::Keep
        } else {
            Outcome::Drop
        }
    }
    pub fn emit(output: Output) -> Self {
        Outcome::Emit(vec![output])
    }
    pub fn fail(reason: impl Display) -> Self {
        Outcome::Fail(reason.to_string())
    }
    pub fn retry(reason: impl Display) -> Self {
        Outcome::Retry(reason.to_string())
    }
}
