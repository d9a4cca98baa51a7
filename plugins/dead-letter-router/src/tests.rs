use serde_json::json;
use sluice_plugin::testing::Harness;
use sluice_plugin::{Outcome, Output, Record};

use super::DeadLetterRouter;

fn router(config: serde_json::Value) -> Harness<DeadLetterRouter> {
    Harness::<DeadLetterRouter>::new(&config.to_string()).unwrap()
}

fn refused(config: serde_json::Value) -> String {
    match Harness::<DeadLetterRouter>::new(&config.to_string()) {
        Ok(_) => panic!("config accepted: {config}"),
        Err(e) => e,
    }
}

fn reason(h: &mut Harness<DeadLetterRouter>, value: &str) -> String {
    match h.process(Record::new(value)) {
        Outcome::Fail(why) => why,
        other => panic!("{value}: {other:?}"),
    }
}

#[test]
fn invalid_records_get_precise_reasons() {
    let mut h = router(json!({
        "required": {"ts": "integer", "event": "string", "user.id": "string|integer", "tags": "array"},
        "optional": {"note": "string|null", "price": "number"},
    }));
    let ok = r#"{"ts":1700000000000,"event":"click","user":{"id":7},"tags":[]}"#;
    assert_eq!(h.process(Record::new(ok)), Outcome::Keep);
    assert_eq!(
        h.process(Record::new(
            r#"{"ts":1.7e12,"event":"c","user":{"id":"u"},"tags":[1],"note":null,"price":3}"#
        )),
        Outcome::Keep
    );
    assert_eq!(
        reason(
            &mut h,
            r#"{"ts":"1700000000000","event":"click","user":{"id":7},"tags":[]}"#
        ),
        "field 'ts' is a string, expected integer"
    );
    assert_eq!(
        reason(
            &mut h,
            r#"{"ts":1.5,"event":"click","user":{"id":7},"tags":[]}"#
        ),
        "field 'ts' is a number with a fraction (1.5), expected integer"
    );
    assert_eq!(
        reason(
            &mut h,
            r#"{"ts":1,"user":{"id":true},"tags":{},"note":3,"price":"9"}"#
        ),
        "field 'event' is missing; field 'note' is a number, expected string or null; \
         field 'price' is a string, expected number; field 'tags' is an object, expected array; \
         field 'user.id' is a boolean, expected string or integer"
    );
    assert_eq!(
        reason(
            &mut h,
            r#"{"ts":1,"event":"c","user":{"id":7},"tags":[],"price":null}"#
        ),
        "field 'price' is null, expected number"
    );
    assert_eq!(
        reason(&mut h, r#"{"ts":1,"event":"c""#),
        "not JSON: EOF while parsing an object at line 1 column 19"
    );
    assert_eq!(reason(&mut h, "42"), "value is a number, not a JSON object");
    assert_eq!(
        match h.process(Record::new("").without_value()) {
            Outcome::Fail(w) => w,
            o => panic!("{o:?}"),
        },
        "record has no value"
    );
}

#[test]
fn any_type_and_a_list_of_required_fields() {
    let mut h = router(json!({"required": ["a", "b.c"]}));
    assert_eq!(
        h.process(Record::new(r#"{"a":null,"b":{"c":[]}}"#)),
        Outcome::Keep
    );
    assert_eq!(
        reason(&mut h, r#"{"a":1,"b":{"d":1}}"#),
        "field 'b.c' is missing"
    );
    // Without rules, any JSON object is valid.
    let mut h = router(json!({}));
    assert_eq!(h.process(Record::new("{}")), Outcome::Keep);
    assert_eq!(reason(&mut h, "[]"), "value is an array, not a JSON object");
}

#[test]
fn valid_records_are_routed_by_a_field() {
    let mut h = router(json!({
        "required": {"event": "string"},
        "route_field": "event",
        "routes": {"click": "clicks-valid", "view": "views", "spam": "drop", "bad": "dead_letter", "main": "output"},
    }));
    let r = Record::new(r#"{"event":"click"}"#)
        .with_key("k")
        .with_header("h", "1")
        .with_timestamp(5);
    assert_eq!(
        h.process(r),
        Outcome::emit(
            Output::value(r#"{"event":"click"}"#)
                .key("k")
                .header("h", "1")
                .to_topic("clicks-valid")
        )
    );
    assert_eq!(
        h.process(Record::new(r#"{"event":"view"}"#)),
        Outcome::emit(Output::value(r#"{"event":"view"}"#).to_topic("views"))
    );
    assert_eq!(h.process(Record::new(r#"{"event":"spam"}"#)), Outcome::Drop);
    assert_eq!(h.process(Record::new(r#"{"event":"main"}"#)), Outcome::Keep);
    assert_eq!(
        reason(&mut h, r#"{"event":"bad"}"#),
        "event 'bad' is routed to the dead-letter topic"
    );
    // Not listed: the default route, the default output unless configured.
    assert_eq!(
        h.process(Record::new(r#"{"event":"signup"}"#)),
        Outcome::Keep
    );

    let mut h = router(json!({
        "route_field": "kind.code",
        "routes": {"1": "ones", "true": "yes", "a\"b": "quoted"},
        "default_route": "dead_letter",
    }));
    assert_eq!(
        h.process(Record::new(r#"{"kind":{"code":1}}"#)),
        Outcome::emit(Output::value(r#"{"kind":{"code":1}}"#).to_topic("ones"))
    );
    assert_eq!(
        h.process(Record::new(r#"{"kind":{"code":true}}"#)),
        Outcome::emit(Output::value(r#"{"kind":{"code":true}}"#).to_topic("yes"))
    );
    assert_eq!(
        h.process(Record::new(r#"{"kind":{"code":"a\"b"}}"#)),
        Outcome::emit(Output::value(r#"{"kind":{"code":"a\"b"}}"#).to_topic("quoted"))
    );
    assert_eq!(
        reason(&mut h, r#"{"kind":{"code":2}}"#),
        "no route for kind.code '2'"
    );
    assert_eq!(
        reason(&mut h, r#"{"kind":{}}"#),
        "no route: field 'kind.code' is missing or not a string, number or boolean"
    );

    let mut h =
        router(json!({"route_field": "e", "routes": {"a": "ta"}, "default_route": "other"}));
    assert_eq!(
        h.process(Record::new(r#"{"e":"b"}"#)),
        Outcome::emit(Output::value(r#"{"e":"b"}"#).to_topic("other"))
    );
}

#[test]
fn config_errors_name_the_key() {
    assert_eq!(
        refused(json!({"required": {"ts": "int"}})),
        "'required' field 'ts': unknown type 'int' (expected string, number, integer, boolean, object, array, null or any; several joined with |)"
    );
    assert_eq!(
        refused(json!({"required": {"ts": 1}})),
        "'required' field 'ts': the type must be a string like \"integer\", got 1"
    );
    assert_eq!(
        refused(json!({"optional": ["a"]})),
        "'optional' must be a table of field = \"type\", got [\"a\"]"
    );
    assert_eq!(
        refused(json!({"routes": {"a": "b"}})),
        "'routes' needs 'route_field': the field whose value picks the route"
    );
    assert_eq!(
        refused(json!({"route_field": "e", "routes": {"a": "bad topic"}})),
        "'routes.a': 'bad topic' is not a valid topic name (letters, digits, '.', '_', '-'; at most 249)"
    );
    assert_eq!(
        refused(json!({"default_route": 3})),
        "'default_route' must be a topic name, \"output\", \"drop\" or \"dead_letter\", got 3"
    );
    assert_eq!(
        refused(json!({"require": {}})),
        "unknown key 'require' (expected required, optional, route_field, routes, default_route)"
    );
}
