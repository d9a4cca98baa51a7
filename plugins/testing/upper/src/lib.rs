//! Test plugin: the value uppercased; key and headers kept. Non-UTF-8 values go through
//! byte-wise (ASCII letters only).

sluice_plugin::map!(Upper, |r| {
    let value = r.value().map(|v| v.to_ascii_uppercase());
    let mut out = r.to_output();
    out.value = value;
    out
});

#[cfg(test)]
mod tests {
    use super::Upper;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{Outcome, Output, Record};

    #[test]
    fn uppercases_value_and_keeps_key_and_headers() {
        let mut h = Harness::<Upper>::new("{}").unwrap();
        let out = h.process(Record::new("hello").with_key("k").with_header("h", "v"));
        assert_eq!(
            out,
            Outcome::emit(Output::value("HELLO").key("k").header("h", "v"))
        );
    }
}
