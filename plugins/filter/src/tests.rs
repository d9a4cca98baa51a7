use serde_json::json;
use sluice_plugin::testing::Harness;
use sluice_plugin::{Outcome, Output, Record};

use super::Filter;

fn filter(config: serde_json::Value) -> Harness<Filter> {
    Harness::<Filter>::new(&config.to_string()).unwrap()
}

fn refused(config: serde_json::Value) -> String {
    match Harness::<Filter>::new(&config.to_string()) {
        Ok(_) => panic!("config accepted: {config}"),
        Err(e) => e,
    }
}

fn keeps(h: &mut Harness<Filter>, value: &str) -> bool {
    match h.process(Record::new(value)) {
        Outcome::Keep => true,
        Outcome::Drop => false,
        other => panic!("{value}: {other:?}"),
    }
}

#[test]
fn the_readme_example() {
    let mut h = filter(json!({
        "where": {
            "event": {"eq": "click"},
            "price": {"gte": 10, "lt": 100},
            "user.country": {"in": ["DE", "FR"]},
            "campaign": {"exists": true},
        }
    }));
    let ok = r#"{"event":"click","price":10,"user":{"country":"DE"},"campaign":null}"#;
    assert!(keeps(&mut h, ok));
    assert!(keeps(
        &mut h,
        r#"{"event":"click","price":99.5,"user":{"country":"FR","x":[1]},"campaign":"c"}"#
    ));
    for bad in [
        r#"{"event":"view","price":10,"user":{"country":"DE"},"campaign":1}"#,
        r#"{"event":"click","price":100,"user":{"country":"DE"},"campaign":1}"#,
        r#"{"event":"click","price":9.99,"user":{"country":"DE"},"campaign":1}"#,
        r#"{"event":"click","price":"50","user":{"country":"DE"},"campaign":1}"#,
        r#"{"event":"click","price":50,"user":{"country":"US"},"campaign":1}"#,
        r#"{"event":"click","price":50,"user":"DE","campaign":1}"#,
        r#"{"event":"click","price":50,"user":{"country":"DE"}}"#,
    ] {
        assert!(!keeps(&mut h, bad), "{bad}");
    }
}

#[test]
fn every_operator() {
    let cases: &[(serde_json::Value, &str, bool)] = &[
        (json!({"a": {"eq": 1}}), r#"{"a":1.0}"#, true),
        (json!({"a": {"eq": 1}}), r#"{"a":"1"}"#, false),
        (
            json!({"a": {"eq": [1, {"b": 2}]}}),
            r#"{"a":[1,{"b":2.0}]}"#,
            true,
        ),
        (json!({"a": {"eq": true}}), r#"{"a":true}"#, true),
        (json!({"a": {"ne": "x"}}), r#"{"a":"y"}"#, true),
        (json!({"a": {"ne": "x"}}), r#"{"a":"x"}"#, false),
        (json!({"a": {"ne": "x"}}), r#"{}"#, true),
        (json!({"a": {"in": [1, "x"]}}), r#"{"a":"x"}"#, true),
        (json!({"a": {"in": [1, "x"]}}), r#"{"a":2}"#, false),
        (json!({"a": {"in": [1, "x"]}}), r#"{}"#, false),
        (json!({"a": {"not_in": [1, "x"]}}), r#"{"a":2}"#, true),
        (json!({"a": {"not_in": [1, "x"]}}), r#"{"a":1}"#, false),
        (json!({"a": {"not_in": [1, "x"]}}), r#"{}"#, true),
        (json!({"a": {"gt": 5}}), r#"{"a":5}"#, false),
        (json!({"a": {"gt": 5}}), r#"{"a":5.5}"#, true),
        (json!({"a": {"gte": 5}}), r#"{"a":5}"#, true),
        (json!({"a": {"lt": 5}}), r#"{"a":-3}"#, true),
        (json!({"a": {"lte": 5}}), r#"{"a":5.0}"#, true),
        (json!({"a": {"lte": 5}}), r#"{"a":null}"#, false),
        (
            json!({"a": {"gt": 9007199254740992u64}}),
            r#"{"a":9007199254740993}"#,
            true,
        ),
        (
            json!({"a": {"gte": "2024-01-01"}}),
            r#"{"a":"2024-03-01T00:00:00Z"}"#,
            true,
        ),
        (
            json!({"a": {"gte": "2024-01-01"}}),
            r#"{"a":"2023-12-31"}"#,
            false,
        ),
        (
            json!({"a": {"gte": "2024-01-01"}}),
            r#"{"a":20240101}"#,
            false,
        ),
        (json!({"a": {"exists": true}}), r#"{"a":null}"#, true),
        (json!({"a": {"exists": true}}), r#"{"b":1}"#, false),
        (json!({"a": {"exists": false}}), r#"{"b":1}"#, true),
        (json!({"a": {"exists": false}}), r#"{"a":1}"#, false),
        (json!({"a.b": {"exists": false}}), r#"{"a":1}"#, true),
        (json!({"a": {"prefix": "ab"}}), r#"{"a":"abc"}"#, true),
        (json!({"a": {"prefix": "ab"}}), r#"{"a":"xabc"}"#, false),
        (json!({"a": {"prefix": "ab"}}), r#"{"a":["abc"]}"#, false),
        (
            json!({"a": {"prefix": "é"}}),
            r#"{"a":"\u00e9t\u00e9"}"#,
            true,
        ),
        (json!({}), r#"{"anything":1}"#, true),
    ];
    for (cond, value, want) in cases {
        let mut h = filter(json!({ "where": cond }));
        assert_eq!(keeps(&mut h, value), *want, "{cond} on {value}");
    }
}

#[test]
fn projects_fields_in_order_with_their_original_text() {
    let mut h = filter(json!({
        "where": {"event": {"eq": "click"}},
        "project": ["ts", "ad", "user.country", "nope", "geo.lat", "geo.lon"],
    }));
    let r = Record::new(
        r#"{"ad":"a1","event":"click","ts":1.50e3,"user":{"id":7,"country":"DE"},"geo":{"x":1}}"#,
    )
    .with_key("k")
    .with_header("h", "v");
    assert_eq!(
        h.process(r),
        Outcome::emit(
            Output::value(r#"{"ts":1.50e3,"ad":"a1","user":{"country":"DE"}}"#)
                .key("k")
                .header("h", "v")
        )
    );
    assert_eq!(
        h.process(Record::new(r#"{"event":"view","ad":"a1"}"#)),
        Outcome::Drop
    );
    // A whole object and a field inside it.
    let mut h = filter(json!({"project": ["user", "user.id"]}));
    assert_eq!(
        h.process(Record::new(r#"{"user":{"id":7, "n":"x"},"z":0}"#)),
        Outcome::emit(Output::value(r#"{"user":{"id":7, "n":"x"}}"#))
    );
}

#[test]
fn invalid_values_go_to_the_dead_letter_topic_or_are_dropped() {
    let mut h = filter(json!({"where": {"a": {"eq": 1}}}));
    let fail = |o: Outcome| match o {
        Outcome::Fail(why) => why,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        fail(h.process(Record::new("{\"a\":1"))),
        "not JSON: EOF while parsing an object at line 1 column 6"
    );
    assert_eq!(
        fail(h.process(Record::new("[1]"))),
        "value is an array, not a JSON object"
    );
    assert_eq!(
        fail(h.process(Record::new("").without_value())),
        "record has no value"
    );
    assert!(fail(h.process(Record::new(b"\xff".to_vec()))).starts_with("not JSON"));

    let mut h = filter(json!({"where": {"a": {"eq": 1}}, "on_invalid": "drop"}));
    assert_eq!(h.process(Record::new("nope")), Outcome::Drop);
    assert_eq!(h.process(Record::new(r#"{"a":1}"#)), Outcome::Keep);
}

#[test]
fn config_errors_name_the_field() {
    assert_eq!(
        refused(json!({"where": {"price": {"gtt": 1}}})),
        "condition on 'price': unknown operator 'gtt' (expected one of eq, ne, in, not_in, gt, gte, lt, lte, exists, prefix)"
    );
    assert_eq!(
        refused(json!({"where": {"price": {"gte": true}}})),
        "condition on 'price': 'gte' expects a number or a string, got a boolean"
    );
    assert_eq!(
        refused(json!({"where": {"c": {"in": "DE"}}})),
        "condition on 'c': 'in' expects a list of values, got a string"
    );
    assert_eq!(
        refused(json!({"where": {"c": {"exists": "yes"}}})),
        "condition on 'c': 'exists' expects true or false, got a string"
    );
    assert_eq!(
        refused(json!({"where": {"c": "DE"}})),
        "condition on 'c': expected a table of operators like { eq = \"x\" }, got a string"
    );
    assert_eq!(
        refused(json!({"where": {"c": {}}})),
        "condition on 'c': no operator (expected one of eq, ne, in, not_in, gt, gte, lt, lte, exists, prefix)"
    );
    assert_eq!(
        refused(json!({"where": {"c": {"exists": false, "eq": 1}}})),
        "condition on 'c': 'exists = false' cannot be combined with other operators"
    );
    assert!(refused(json!({"where": {"a..b": {"eq": 1}}}))
        .starts_with("'where': 'a..b' is not a field path"));
    assert_eq!(
        refused(json!({"wher": {}})),
        "unknown key 'wher' (expected where, project, on_invalid)"
    );
    assert_eq!(
        refused(json!({"project": "a"})),
        "'project' must be a list of field paths, got a string"
    );
    assert_eq!(
        refused(json!({"on_invalid": "skip"})),
        "'on_invalid' must be \"drop\" or \"dead_letter\", got \"skip\""
    );
    assert!(Harness::<Filter>::new("").is_ok());
}
