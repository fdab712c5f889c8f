//! The filter language: parsing, errors and evaluation over columns.

use crosscast_sdk::filter::{Column, Columns, Filter};
use proptest::prelude::*;

fn text(values: &[Option<&str>]) -> Column {
    Column::Text(values.iter().map(|v| v.map(str::to_string)).collect())
}

/// Four recipients: email only, mobile only, both, neither.
fn sample() -> Columns {
    let mut c = Columns::new();
    c.insert(
        "recipient.email".into(),
        text(&[Some("a@x.test"), None, Some("c@x.test"), Some("")]),
    );
    c.insert(
        "recipient.mobile".into(),
        text(&[None, Some("+1555"), Some("+1556"), None]),
    );
    c.insert(
        "platform".into(),
        text(&[Some("ios"), Some("android"), Some("ios"), Some("android")]),
    );
    c.insert(
        "score".into(),
        text(&[Some("10"), Some("2.5"), None, Some("x")]),
    );
    c
}

#[test]
fn evaluates_a_table_of_filters() {
    let cases: &[(&str, [bool; 4])] = &[
        ("recipient.email is not empty", [true, false, true, false]),
        ("recipient.email is empty", [false, true, false, true]),
        (
            "recipient.email IS NOT EMPTY or recipient.mobile is not empty",
            [true, true, true, false],
        ),
        (
            "recipient.email is not empty and recipient.mobile is not empty",
            [false, false, true, false],
        ),
        (
            "not recipient.email is not empty",
            [false, true, false, true],
        ),
        ("platform = 'ios'", [true, false, true, false]),
        ("platform != 'ios'", [false, true, false, true]),
        (
            "platform = \"android\" and not (recipient.mobile is empty)",
            [false, true, false, false],
        ),
        ("score = 10", [true, false, false, false]),
        ("score = 2.5", [false, true, false, false]),
        // An absent value compares false with either operator.
        ("score != 10", [false, true, false, true]),
        (
            "recipient.email = 'a@x.test' or (platform = 'ios' and recipient.mobile is not empty)",
            [true, false, true, false],
        ),
    ];
    let cols = sample();
    for (src, want) in cases {
        let f = Filter::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(f.evaluate(&cols, 4).unwrap(), want.to_vec(), "{src}");
    }
}

#[test]
fn lists_each_path_once() {
    let f = Filter::parse("a is empty or (b = 'x' and a != 'y')").unwrap();
    assert_eq!(f.paths(), vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn errors_point_at_the_column() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 1, "expected a condition"),
        ("email is", 9, "expected `empty`"),
        ("email = ", 9, "expected a value"),
        ("(email is empty", 16, "expected `)`"),
        ("email is empty and", 19, "expected an attribute path"),
        ("email == 'x'", 8, "expected a value"),
        ("email = 'x", 9, "unterminated text"),
        ("email is empty email", 16, "expected `and`, `or`"),
        ("email ~ 'x'", 7, "unexpected character"),
        ("recipient..email is empty", 1, "not a valid attribute path"),
    ];
    for (src, column, msg) in cases {
        let err = Filter::parse(src).expect_err(src);
        assert_eq!(err.column, *column, "{src}: {err}");
        assert!(err.message.contains(msg), "{src}: {err}");
        // The rendering shows the filter and a caret under the column.
        let rendered = err.to_string();
        let caret_line = rendered.lines().last().unwrap();
        assert_eq!(caret_line.find('^'), Some(column + 1), "{rendered}");
    }
}

#[test]
fn evaluation_names_a_missing_column() {
    let f = Filter::parse("nope is empty").unwrap();
    assert!(
        f.evaluate(&sample(), 4)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

proptest! {
    /// Whatever the input, parsing returns (never panics).
    #[test]
    fn arbitrary_input_never_panics(s in ".{0,60}") {
        let _ = Filter::parse(&s);
    }

    /// Inputs built from the language's own tokens never panic either, and
    /// whatever parses evaluates on columns for all its paths.
    #[test]
    fn token_soup_parses_or_errors(toks in proptest::collection::vec(
        prop_oneof![
            Just("a"), Just("b.c"), Just("="), Just("!="), Just("is"), Just("not"), Just("empty"),
            Just("and"), Just("or"), Just("("), Just(")"), Just("'x'"), Just("1"), Just("true"),
        ], 0..12)) {
        let src = toks.join(" ");
        if let Ok(f) = Filter::parse(&src) {
            let cols: Columns = f.paths().into_iter().map(|p| (p, text(&[Some("x"), None]))).collect();
            prop_assert_eq!(f.evaluate(&cols, 2).unwrap().len(), 2);
        }
    }
}
