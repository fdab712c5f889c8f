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
    c.insert(
        "created".into(),
        text(&[
            Some("2026-11-01"),
            Some("2026-11-28T12:00:00Z"),
            Some("not a date"),
            Some("2025-01-01T00:00:00+01:00"),
        ]),
    );
    c.insert(
        "opted".into(),
        Column::Boolean(vec![Some(true), Some(false), None, Some(true)]),
    );
    c.insert(
        "visits".into(),
        Column::Integer(vec![Some(3), Some(0), Some(12), None]),
    );
    c.insert(
        "app".into(),
        Column::Dictionary {
            values: vec!["com.acme.shop".into(), "com.acme.news".into()],
            rows: vec![Some(0), Some(1), None, Some(0)],
        },
    );
    c
}

/// The run's clock in the table: 2026-11-29T00:00:00Z.
const NOW: i64 = 1_795_910_400_000;

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
        // Ordering: numbers compare as numbers, texts as texts.
        ("score > 3", [true, false, false, false]),
        ("score >= 2.5", [true, true, false, false]),
        ("score < 10", [false, true, false, false]),
        ("score <= -1", [false, false, false, false]),
        ("platform > 'b'", [true, false, true, false]),
        ("platform <> 'ios'", [false, true, false, true]),
        ("visits >= 3", [true, false, true, false]),
        ("visits = 0", [false, true, false, false]),
        // in / not in, on text, dictionary and integer columns.
        ("platform in ('ios', 'web')", [true, false, true, false]),
        ("platform not in ('ios')", [false, true, false, true]),
        ("app in ('com.acme.news')", [false, true, false, false]),
        ("visits in (0, 12)", [false, true, true, false]),
        ("score in (10, 'x')", [true, false, false, true]),
        // Text matching.
        (
            "recipient.email starts with 'a@'",
            [true, false, false, false],
        ),
        (
            "recipient.email contains 'x.test'",
            [true, false, true, false],
        ),
        (
            "recipient.email not contains 'a@'",
            [false, false, true, false],
        ),
        ("recipient.email like '_@x.%'", [true, false, true, false]),
        ("recipient.email not like 'c%'", [true, false, false, false]),
        ("app like '%.shop'", [true, false, false, true]),
        ("app = 'com.acme.shop'", [true, false, false, true]),
        ("app != 'com.acme.shop'", [false, true, false, false]),
        // Booleans.
        ("opted = true", [true, false, false, true]),
        ("opted != true", [false, true, false, false]),
        ("opted is empty", [false, false, true, false]),
        // Dates: fixed, and relative to the run's clock.
        ("created > now() - 30d", [true, true, false, false]),
        (
            "created >= date('2026-11-28T12:00:00Z')",
            [false, true, false, false],
        ),
        ("created < today() - 1w", [true, false, false, true]),
        ("created < '2026-01-01'", [false, false, false, true]),
        ("created > today() - 1d + 11h", [false, true, false, false]),
        (
            "created > now() - 365d and not (platform = 'ios')",
            [false, true, false, false],
        ),
    ];
    let cols = sample();
    for (src, want) in cases {
        let f = Filter::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(f.evaluate(&cols, 4, NOW).unwrap(), want.to_vec(), "{src}");
    }
}

#[test]
fn asks_only_for_presence_when_values_are_not_needed() {
    let f = Filter::parse("recipient.email is not empty or (app = 'x' and app is empty)").unwrap();
    let fields: Vec<(&str, bool)> = f
        .fields()
        .iter()
        .map(|x| (x.path.as_str(), x.presence_only))
        .collect();
    assert_eq!(fields, [("recipient.email", true), ("app", false)]);
    // A presence column answers `is empty` but refuses comparisons.
    let mut cols = Columns::new();
    cols.insert("a".into(), Column::Presence(vec![true, false]));
    let f = Filter::parse("a is empty").unwrap();
    assert_eq!(f.evaluate(&cols, 2, 0).unwrap(), vec![false, true]);
    let f = Filter::parse("a = 'x'").unwrap();
    assert!(
        f.evaluate(&cols, 2, 0)
            .unwrap_err()
            .to_string()
            .contains("presence")
    );
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
        ("score >", 8, "expected a value"),
        ("score => 3", 8, "expected a value"),
        ("flag < true", 8, "only be compared with `=` or `!=`"),
        ("platform in 'ios'", 13, "expected `(`"),
        ("platform in ('ios' 'android')", 20, "expected `,` or `)`"),
        ("platform in ()", 14, "expected a value"),
        ("email like 5", 12, "expected a quoted text"),
        ("email starts 'a'", 14, "expected `with`"),
        (
            "email not = 'a'",
            11,
            "`in`, `like`, `contains` or `starts with` after `not`",
        ),
        ("created > now() - 30", 19, "expected a duration"),
        ("created > now() - 30y", 21, "not a duration unit"),
        ("created > now( - 1d", 16, "expected `)`"),
        ("created > date('2026-02-30')", 16, "is not a date"),
        ("created > date(2026)", 16, "expected a quoted date"),
        ("created > 2026-01-05", 15, "a date is written date("),
        ("score = -x", 10, "expected a number after `-`"),
        ("score is nothing", 10, "expected `empty`"),
        ("score ~ 1", 7, "unexpected character"),
        ("score 1", 7, "expected `=`, `!=`, `<`"),
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
fn nesting_is_limited_at_the_filter_position() {
    use crosscast_sdk::filter::MAX_NESTING;
    let ok = format!(
        "{}a is empty{}",
        "(".repeat(MAX_NESTING),
        ")".repeat(MAX_NESTING)
    );
    assert!(Filter::parse(&ok).is_ok());
    let nots = format!("{}a is empty", "not ".repeat(MAX_NESTING));
    assert!(Filter::parse(&nots).is_ok());
    // 100k deep: refused where the 65th level opens, not a stack overflow.
    for (src, column) in [
        (
            format!("{}a is empty{}", "(".repeat(100_000), ")".repeat(100_000)),
            MAX_NESTING + 1,
        ),
        (
            format!("{}a is empty", "not ".repeat(100_000)),
            4 * MAX_NESTING + 1,
        ),
        (
            format!("b = 1 or {}a is empty", "not (".repeat(100_000)),
            10 + 5 * (MAX_NESTING / 2),
        ),
    ] {
        let err = Filter::parse(&src).expect_err("too deep");
        assert_eq!(err.column, column, "{err}");
        assert!(err.message.contains("more than 64 deep"), "{err}");
        // The error shows the filter around the column, with the caret on it.
        let rendered = err.to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        assert!(lines[1].chars().count() < 130, "{rendered}");
        let caret = lines[2].chars().position(|c| c == '^').unwrap();
        let shown: Vec<char> = lines[1].chars().collect();
        let at = src.chars().nth(column - 1).unwrap();
        assert_eq!(shown[caret], at, "{rendered}");
    }
}

#[test]
fn evaluation_names_a_missing_column() {
    let f = Filter::parse("nope is empty").unwrap();
    assert!(
        f.evaluate(&sample(), 4, NOW)
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
            Just("<"), Just(">="), Just("in"), Just(","), Just("like"), Just("contains"),
            Just("starts"), Just("with"), Just("now()"), Just("-"), Just("+"), Just("30d"),
            Just("date('2026-01-05')"), Just("today"), Just("'%x_'"), Just("-2.5"),
        ], 0..14)) {
        let src = toks.join(" ");
        if let Ok(f) = Filter::parse(&src) {
            let cols: Columns = f.paths().into_iter().map(|p| (p, text(&[Some("x"), None]))).collect();
            prop_assert_eq!(f.evaluate(&cols, 2, NOW).unwrap().len(), 2);
        }
    }
}
