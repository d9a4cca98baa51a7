//! `sluice consume TOPIC`: print records from every partition, one per line.

use std::io::Write;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::topic::{metadata, watermarks};
use super::{kafka_error, Conn};
use crate::client::Client;
use crate::records::decode_batches;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Where to start in each partition, as kcat's -o: beginning, end, an offset, -N (N
    /// before the end), s@MS (the first record at or after that time, ms since the epoch) or
    /// @-DURATION (that long ago: 90s, 15m, 1h, 2d)
    #[arg(long, short = 'o', allow_hyphen_values = true)]
    pub offset: Option<String>,
    /// Same as -o beginning
    #[arg(long)]
    pub from_beginning: bool,
    /// Only this partition
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Print KEY<TAB>VALUE (same as -f '%k\t%s\n')
    #[arg(long)]
    pub print_key: bool,
    /// Output format, as kcat's -f: %t topic, %p partition, %o offset, %T timestamp (ms),
    /// %k key, %s value, %K and %S their lengths (-1 for null), %h headers (k=v,k=v), %%;
    /// \n \t \\ escapes
    #[arg(long, short = 'f')]
    pub format: Option<String>,
    /// Stop after N records
    #[arg(long, short = 'n')]
    pub max: Option<u64>,
    /// Stop at the end of every partition (its end when consuming started), as kcat's -e
    #[arg(long, short = 'e')]
    pub exit: bool,
    #[command(flatten)]
    pub conn: Conn,
}

/// Where consuming starts in a partition (see `--offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    FromEnd(i64),
    Time(i64),
}

/// Parses an `--offset` value; `now_ms` anchors relative times.
pub fn parse_start(spec: &str, now_ms: i64) -> Result<Start> {
    let spec = spec.trim();
    Ok(match spec {
        "beginning" | "earliest" | "oldest" => Start::Beginning,
        "end" | "latest" | "newest" => Start::End,
        _ if spec.starts_with("s@") => Start::Time(
            spec[2..]
                .parse()
                .with_context(|| format!("'{spec}': s@ takes milliseconds since the epoch"))?,
        ),
        _ if spec.starts_with("@-") => {
            let d = &spec[2..];
            let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
            let (n, unit) = d.split_at(split);
            let n: i64 = n
                .parse()
                .with_context(|| format!("'{spec}': expected @-N followed by ms, s, m, h or d"))?;
            let ms = match unit {
                "ms" => 1,
                "" | "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                other => bail!("'{spec}': unknown unit '{other}' (ms, s, m, h or d)"),
            };
            Start::Time(now_ms - n.saturating_mul(ms))
        }
        _ if spec.starts_with('-') => Start::FromEnd(
            spec[1..]
                .parse()
                .with_context(|| format!("'{spec}': -N takes a record count"))?,
        ),
        _ => Start::Offset(spec.parse().with_context(|| {
            format!("'{spec}': expected beginning, end, an offset, -N, s@MS or @-DURATION")
        })?),
    })
}

/// Writes one record as `format` says (kcat's tokens; see `--format`).
pub fn format_record(
    out: &mut Vec<u8>,
    format: &[u8],
    topic: &str,
    partition: i32,
    r: &crate::records::Record,
) {
    let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
    let mut i = 0;
    while i < format.len() {
        let c = format[i];
        let next = format.get(i + 1).copied();
        match (c, next) {
            (b'%', Some(t)) => {
                match t {
                    b't' => out.extend_from_slice(topic.as_bytes()),
                    b'p' => out.extend_from_slice(partition.to_string().as_bytes()),
                    b'o' => out.extend_from_slice(r.offset.to_string().as_bytes()),
                    b'T' => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                    b'k' => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
                    b's' => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
                    b'K' => out.extend_from_slice(len(&r.key).to_string().as_bytes()),
                    b'S' => out.extend_from_slice(len(&r.value).to_string().as_bytes()),
                    b'h' => {
                        for (n, (k, v)) in r.headers.iter().enumerate() {
                            if n > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(k);
                            out.push(b'=');
                            out.extend_from_slice(v.as_deref().unwrap_or_default());
                        }
                    }
                    b'%' => out.push(b'%'),
                    other => out.extend_from_slice(&[b'%', other]),
                }
                i += 2;
            }
            (b'\\', Some(t)) => {
                match t {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'\\' => out.push(b'\\'),
                    other => out.extend_from_slice(&[b'\\', other]),
                }
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
}

pub async fn run(a: ConsumeArgs) -> Result<()> {
    let start = match (&a.offset, a.from_beginning) {
        (Some(_), true) => bail!("--from-beginning and --offset: give one"),
        (Some(s), false) => parse_start(s, crate::broker::now_ms())?,
        (None, true) => Start::Beginning,
        (None, false) => Start::End,
    };
    let format = match (&a.format, a.print_key) {
        (Some(f), _) => f.clone().into_bytes(),
        (None, true) => b"%k\t%s\n".to_vec(),
        (None, false) => b"%s\n".to_vec(),
    };
    let mut c = a.conn.connect().await?;
    let md = metadata(&mut c, Some(std::slice::from_ref(&a.topic))).await?;
    let t = md.topics.first().context("empty metadata response")?;
    if t.error_code != 0 {
        bail!("topic '{}': {}", a.topic, kafka_error(t.error_code, None));
    }
    let mut parts: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    parts.sort();
    if let Some(p) = a.partition {
        if !parts.contains(&p) {
            bail!("topic '{}' has no partition {p}", a.topic);
        }
        parts = vec![p];
    }
    let wms = watermarks(&mut c, &a.topic, &parts).await?;
    let at_time = match start {
        Start::Time(ts) => {
            Some(super::topic::offsets_at(&mut c, &a.topic, &parts, ts.max(0)).await?)
        }
        _ => None,
    };
    let mut next: Vec<i64> = parts
        .iter()
        .zip(&wms)
        .map(|(p, &(lo, hi))| match start {
            Start::Beginning => lo,
            Start::End => hi,
            Start::Offset(o) => o.clamp(lo, hi),
            Start::FromEnd(n) => (hi - n).max(lo),
            // -1: no record at or after that time.
            Start::Time(_) => at_time
                .as_ref()
                .and_then(|m| m.get(p).copied())
                .filter(|&o| o >= 0)
                .unwrap_or(hi),
        })
        .collect();
    let ends: Vec<i64> = wms.iter().map(|&(_, hi)| hi).collect();
    let version = c
        .version(ApiKey::Fetch, 12)
        .context("broker does not support Fetch")?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        if a.exit && next.iter().zip(&ends).all(|(n, e)| n >= e) {
            return Ok(());
        }
        let batch = fetch(&mut c, &a.topic, &parts, &mut next, version).await?;
        let mut out = stdout.lock();
        for (p, r) in batch {
            buf.clear();
            format_record(&mut buf, &format, &a.topic, p, &r);
            out.write_all(&buf)?;
            printed += 1;
            if a.max.is_some_and(|m| printed >= m) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}

/// One fetch of `parts` of `topic` from the offsets in `next` (advanced past what is
/// returned); waits up to half a second for data.
pub(crate) async fn fetch(
    c: &mut Client,
    topic: &str,
    parts: &[i32],
    next: &mut [i64],
    version: i16,
) -> Result<Vec<(i32, crate::records::Record)>> {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(16 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                parts
                    .iter()
                    .zip(next.iter())
                    .map(|(&p, &o)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(o)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]);
    let resp = c.call(&req, version).await?;
    if resp.error_code != 0 {
        bail!("fetch failed: {}", kafka_error(resp.error_code, None));
    }
    let mut out = Vec::new();
    for tr in resp.responses {
        for pd in tr.partitions {
            let Some(i) = parts.iter().position(|&p| p == pd.partition_index) else {
                continue;
            };
            if pd.error_code != 0 {
                bail!(
                    "fetch of partition {} failed: {}",
                    pd.partition_index,
                    kafka_error(pd.error_code, None)
                );
            }
            let Some(data) = pd.records else { continue };
            for r in decode_batches(data)? {
                if r.offset < next[i] {
                    continue;
                }
                next[i] = r.offset + 1;
                out.push((pd.partition_index, r));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_as_kcat_writes_them() {
        let now = 10_000_000;
        assert_eq!(parse_start("beginning", now).unwrap(), Start::Beginning);
        assert_eq!(parse_start("end", now).unwrap(), Start::End);
        assert_eq!(parse_start("42", now).unwrap(), Start::Offset(42));
        assert_eq!(parse_start("-5", now).unwrap(), Start::FromEnd(5));
        assert_eq!(parse_start("s@1700", now).unwrap(), Start::Time(1700));
        assert_eq!(
            parse_start("@-1h", now).unwrap(),
            Start::Time(now - 3_600_000)
        );
        assert_eq!(
            parse_start("@-90s", now).unwrap(),
            Start::Time(now - 90_000)
        );
        assert_eq!(parse_start("@-250ms", now).unwrap(), Start::Time(now - 250));
        for bad in ["", "soon", "s@x", "@-1y", "-x"] {
            assert!(parse_start(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_format_as_kcat_does() {
        let r = crate::records::Record {
            offset: 7,
            timestamp: 1234,
            key: None,
            value: Some(bytes::Bytes::from_static(b"v1")),
            headers: vec![
                (
                    bytes::Bytes::from_static(b"a"),
                    Some(bytes::Bytes::from_static(b"1")),
                ),
                (bytes::Bytes::from_static(b"b"), None),
            ],
        };
        let mut out = Vec::new();
        format_record(
            &mut out,
            br"%t/%p@%o %T k=%k(%K) v=%s(%S) h=%h 100%%\t%x\n",
            "clicks",
            3,
            &r,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "clicks/3@7 1234 k=(-1) v=v1(2) h=a=1,b= 100%\t%x\n"
        );
    }
}
