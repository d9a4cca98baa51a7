use bytes::Bytes;
use serde_json::Value;

use super::*;
use crate::broker::config::TopicConfig;
use crate::records::{encode_batch, Compression, Record};

fn get(b: &Broker, target: &str) -> (String, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, _, body) = api("GET", path, query, b, None, None).expect("a console route");
    (status.to_string(), serde_json::from_str(&body).unwrap())
}

/// A batch of records `first..first + n`, JSON values, one with a binary key, stamped
/// 1000 ms apart from `ts`.
fn batch(first: i64, n: i64, ts: i64) -> Vec<u8> {
    let records: Vec<Record> = (first..first + n)
        .map(|i| Record {
            timestamp: ts + i * 1000,
            key: Some(if i == 3 {
                Bytes::from_static(&[0xff, 0x00, 0x80])
            } else {
                Bytes::from(format!("k{i}"))
            }),
            value: Some(Bytes::from(format!("{{\"n\":{i}}}"))),
            headers: vec![(Bytes::from_static(b"h"), Some(Bytes::from(format!("{i}"))))],
            ..Default::default()
        })
        .collect();
    encode_batch(&records, Compression::Lz4).unwrap().to_vec()
}

fn broker_with_records() -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let b = crate::broker::testing::open(dir.path());
    let t = b
        .create_topic("clicks", 2, TopicConfig::default(), false)
        .unwrap();
    let p = t.partition(0).unwrap();
    for k in 0..4 {
        p.append(&batch(k * 5, 5, 1_000_000), 1 << 20, None)
            .unwrap();
    }
    (dir, b)
}

fn offsets(v: &Value) -> Vec<i64> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect()
}

#[test]
fn the_message_browser_reads_by_offset_from_the_end_and_by_time() {
    let (_d, b) = broker_with_records();
    // From an offset inside a batch: the records before it in that batch are skipped.
    let (s, v) = get(&b, "/v1/topics/clicks/messages?partition=0&offset=7&max=4");
    assert_eq!(s, "200 OK");
    assert_eq!(offsets(&v), vec![7, 8, 9, 10]);
    assert_eq!(v["next"], 11);
    assert_eq!(v["high_watermark"], 20);
    let r = &v["records"][0];
    assert_eq!(r["value"]["text"], "{\"n\":7}");
    assert_eq!(r["key"]["text"], "k7");
    assert_eq!(r["headers"][0]["key"], "h");
    assert_eq!(r["headers"][0]["value"]["text"], "7");
    assert_eq!(r["timestamp"], 1_007_000);
    // A negative offset counts back from the end; the default is the last `max`.
    let (_, v) = get(&b, "/v1/topics/clicks/messages?partition=0&offset=-3");
    assert_eq!(offsets(&v), vec![17, 18, 19]);
    let (_, v) = get(&b, "/v1/topics/clicks/messages?max=2");
    assert_eq!(offsets(&v), vec![18, 19]);
    // By time: the first record stamped at or after it.
    let (_, v) = get(
        &b,
        "/v1/topics/clicks/messages?partition=0&time=1012500&max=2",
    );
    assert_eq!(offsets(&v), vec![13, 14]);
    // Binary keys come as base64.
    let (_, v) = get(&b, "/v1/topics/clicks/messages?offset=3&max=1");
    assert_eq!(v["records"][0]["key"]["base64"], "/wCA");
    // An empty partition, a missing one, a bad number.
    let (_, v) = get(&b, "/v1/topics/clicks/messages?partition=1");
    assert_eq!(offsets(&v), Vec::<i64>::new());
    assert_eq!(
        get(&b, "/v1/topics/clicks/messages?partition=9").0,
        "404 Not Found"
    );
    assert_eq!(
        get(&b, "/v1/topics/clicks/messages?offset=x").0,
        "400 Bad Request"
    );
    assert_eq!(get(&b, "/v1/topics/nope/messages").0, "404 Not Found");
}

#[test]
fn a_batch_that_cannot_be_decoded_is_reported_and_hides_nothing_else() {
    let (_d, b) = broker_with_records();
    let p = b.topic("clicks").unwrap().partition(1).unwrap().clone();
    p.append(&batch(0, 2, 0), 1 << 20, None).unwrap();
    // A valid header and CRC around records that do not parse: the first record claims a
    // length far beyond the batch.
    let records = vec![Record::default(); 2];
    let mut bad = encode_batch(&records, Compression::None).unwrap().to_vec();
    bad[61..66].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    p.append(&bad, 1 << 20, None).unwrap();
    p.append(&batch(0, 2, 0), 1 << 20, None).unwrap();
    let (_, v) = get(&b, "/v1/topics/clicks/messages?partition=1&offset=0");
    assert_eq!(offsets(&v), vec![0, 1, 4, 5]);
    assert_eq!(v["undecodable"][0]["base_offset"], 2);
}

#[test]
fn topics_and_a_topic_show_watermarks_sizes_and_configs() {
    let (_d, b) = broker_with_records();
    let (_, v) = get(&b, "/v1/topics");
    let t = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "clicks")
        .unwrap();
    assert_eq!(t["partitions"], 2);
    assert_eq!(t["records"], 20);
    assert!(t["size_bytes"].as_u64().unwrap() > 0);
    let (_, v) = get(&b, "/v1/topics/clicks");
    assert_eq!(v["partitions"][0]["high_watermark"], 20);
    assert_eq!(v["partitions"][1]["high_watermark"], 0);
    let retention = v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "retention.ms")
        .unwrap();
    assert_eq!(retention["default"], true);
    assert_eq!(get(&b, "/v1/topics/nope").0, "404 Not Found");
}

#[test]
fn groups_show_committed_offsets_and_lag() {
    let (_d, b) = broker_with_records();
    assert_eq!(
        b.groups.write_offsets(
            "readers",
            vec![
                ("clicks".into(), 0, 15, -1, String::new()),
                ("clicks".into(), 1, 0, -1, String::new()),
            ]
        ),
        0
    );
    let (_, v) = get(&b, "/v1/groups");
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "readers")
        .unwrap();
    assert_eq!(g["lag"], 5);
    assert_eq!(g["state"], "Empty");
    // Group ids may hold any character: the path is percent-decoded.
    b.groups
        .write_offsets("a b/c", vec![("clicks".into(), 0, 20, -1, String::new())]);
    let (s, v) = get(&b, "/v1/groups/a%20b%2Fc");
    assert_eq!(s, "200 OK");
    assert_eq!(v["lag"], 0);
    let (_, v) = get(&b, "/v1/groups/readers");
    let rows = v["offsets"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["committed"], 15);
    assert_eq!(rows[0]["end"], 20);
    assert_eq!(rows[0]["lag"], 5);
    assert_eq!(get(&b, "/v1/groups/nobody").0, "404 Not Found");
}

#[test]
fn the_page_is_served_and_other_paths_are_left_to_the_admin_api() {
    let (_d, b) = broker_with_records();
    let (ctype, html) = asset("/").unwrap();
    assert!(ctype.starts_with("text/html"));
    assert!(html.contains("console.js"));
    assert!(asset("/console/console.js").is_some());
    assert!(asset("/console/console.css").is_some());
    assert!(asset("/etc/passwd").is_none());
    assert!(api("GET", "/v1/pipelines", "", &b, None, None).is_none());
    assert!(api("POST", "/v1/topics", "", &b, None, None).is_none());
    let (_, v) = get(&b, "/v1/overview");
    assert_eq!(v["topics"].as_u64(), Some(b.topics().len() as u64));
    let (_, v) = get(&b, "/v1/history");
    assert_eq!(v["points"], serde_json::json!([]));
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    assert_eq!(percent_decode("%E2%9C%93"), "✓");
}

#[test]
fn share_groups_show_their_members_and_start_offsets() {
    let (_d, b) = broker_with_records();
    let id = b.topic("clicks").unwrap().id;
    b.groups.with_share("sharers", |g| {
        g.members.insert(
            "m1".into(),
            crate::group::share::ShareMember {
                id: "m1".into(),
                subscribed: vec!["clicks".into()],
                last_heartbeat_ms: 0,
                epoch: 1,
                client_id: "c1".into(),
                client_host: "/127.0.0.1".into(),
            },
        );
        g.partitions
            .insert((id, 0), crate::group::share::SharePartition::new(12));
    });
    let (_, v) = get(&b, "/v1/groups");
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "sharers")
        .unwrap();
    assert_eq!(g["type"], "share");
    assert_eq!(g["members"], 1);
    assert_eq!(g["lag"], 8);
    let (_, v) = get(&b, "/v1/groups/sharers");
    assert_eq!(v["state"], "Stable");
    assert_eq!(v["members"][0]["client_id"], "c1");
    assert_eq!(v["members"][0]["assigned"][0], "clicks");
    assert_eq!(v["offsets"][0]["committed"], 12);
    assert_eq!(v["offsets"][0]["end"], 20);
}
