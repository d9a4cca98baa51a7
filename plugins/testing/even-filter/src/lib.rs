//! Test plugin: keeps records whose value is an even integer, drops odd ones, and sends
//! anything else to the dead-letter topic with "not a number: VALUE".

use sluice_plugin::Outcome;

sluice_plugin::map!(EvenFilter, |r| {
    let text = r.value_str().unwrap_or("");
    match text.trim().parse::<i64>() {
        Ok(n) => Outcome::keep_if(n % 2 == 0),
        Err(_) => Outcome::fail(format!("not a number: {text}")),
    }
});

#[cfg(test)]
mod tests {
    use super::EvenFilter;
    use sluice_plugin::testing::Harness;
    use sluice_plugin::{Outcome, Record};

    #[test]
    fn keeps_even_drops_odd_fails_text() {
        let mut h = Harness::<EvenFilter>::new("{}").unwrap();
        let got = h.process_all(["4", "7", "-2", "x"].map(Record::new));
        assert_eq!(
            got,
            vec![
                Outcome::Keep,
                Outcome::Drop,
                Outcome::Keep,
                Outcome::fail("not a number: x")
            ]
        );
    }
}
