//! A workflow's `[schedule]`: when `crosscast serve` starts its runs. A cron
//! expression (croner) read in an IANA time zone (jiff, which carries its
//! own copy of the tz database), an optional start and end, and whether a
//! run may start while the previous one of the schedule is still going.
//!
//! Daylight saving, as croner follows the Open Cron Pattern Specification:
//! a time of day a change skips (02:30 when clocks go from 02:00 to 03:00)
//! is due at the first instant after the gap (03:00); a time of day that
//! occurs twice is due once, at the first. Patterns with wildcards or steps
//! in the hour (`*/15 * * * *`) follow real time through both.

use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml_edit::{Item, TableLike};

/// When a workflow's runs start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Schedule {
    /// The cron expression: minute hour day-of-month month day-of-week, or
    /// six fields with seconds first (`@daily` and the like too).
    pub cron: String,
    /// The IANA time zone its times of day are read in.
    pub timezone: String,
    /// No run is due before this instant (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    /// No run is due after this instant (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    /// A run may start while the previous one is still going.
    #[serde(default)]
    pub overlap: bool,
}

impl Schedule {
    /// The first instant after `after_ms` at which a run is due (the start
    /// itself counts when it is later); `None` past the end.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let cron = croner::Cron::from_str(&self.cron).ok()?;
        let tz = jiff::tz::TimeZone::get(&self.timezone).ok()?;
        let (from, inclusive) = match self.start_ms {
            Some(start) if start > after_ms => (start, true),
            _ => (after_ms, false),
        };
        // Cron has a resolution of seconds: a search from 09:00:00.5 must
        // not find 09:00:00 again.
        let seconds = jiff::Timestamp::from_second(from.div_euclid(1000)).ok()?;
        let inclusive = inclusive && from.rem_euclid(1000) == 0;
        let next = cron
            .find_next_occurrence(&seconds.to_zoned(tz), inclusive)
            .ok()?;
        let ms = next.timestamp().as_millisecond();
        match self.end_ms {
            Some(end) if ms > end => None,
            _ => Some(ms),
        }
    }
}

/// A problem in `[schedule]`: the span it is at, its field and what is wrong.
pub type Problem = (Option<Range<usize>>, String, String);

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, span: Option<Range<usize>>, field: &str, message: String) {
        self.0.push((span, format!("schedule.{field}"), message));
    }
}

/// A text field (or a TOML date, written without quotes) and its span.
type Text = Option<(String, Option<Range<usize>>)>;

/// Reads `[schedule]`; every problem is reported, not only the first.
pub fn parse(item: &Item) -> Result<Schedule, Vec<Problem>> {
    let Some(table) = item.as_table_like() else {
        return Err(vec![(
            item.span(),
            "schedule".into(),
            "expected a table: [schedule] with cron and timezone".into(),
        )]);
    };
    let mut problems = Problems::default();
    let cron = text(table, "cron", &mut problems);
    let timezone = text(table, "timezone", &mut problems);
    let start = text(table, "start", &mut problems);
    let end = text(table, "end", &mut problems);
    for (key, v) in table.iter() {
        if !["cron", "timezone", "start", "end", "overlap"].contains(&key) {
            problems.add(
                key_span(table, key).or_else(|| v.span()),
                key,
                format!("unknown field `{key}` (expected cron, timezone, start, end, overlap)"),
            );
        }
    }
    let overlap = match table.get("overlap") {
        None => false,
        Some(v) => v.as_bool().unwrap_or_else(|| {
            problems.add(v.span(), "overlap", "expected true or false".into());
            false
        }),
    };
    match &cron {
        None if table.get("cron").is_none() => problems.add(
            item.span(),
            "cron",
            "missing `cron` (when runs start, e.g. \"0 9 * * MON-FRI\")".into(),
        ),
        Some((c, span)) => {
            if let Err(e) = croner::Cron::from_str(c) {
                problems.add(
                    span.clone(),
                    "cron",
                    format!("`{c}` is not a cron expression: {e}"),
                );
            }
        }
        None => {}
    }
    let zone = match &timezone {
        None => {
            if table.get("timezone").is_none() {
                problems.add(
                    item.span(),
                    "timezone",
                    "missing `timezone`: the IANA time zone its times are in, e.g. \
                     \"Europe/Paris\" or \"UTC\""
                        .into(),
                );
            }
            None
        }
        Some((name, span)) => match crate::timezones::zone(name) {
            Ok(tz) => Some(tz),
            Err(why) => {
                problems.add(span.clone(), "timezone", why);
                None
            }
        },
    };
    let start_ms = instant("start", &start, zone.as_ref(), &mut problems);
    let end_ms = instant("end", &end, zone.as_ref(), &mut problems);
    if let (Some(s), Some(e)) = (start_ms, end_ms)
        && e <= s
    {
        problems.add(
            end.as_ref().and_then(|(_, span)| span.clone()),
            "end",
            "the end comes before the start".into(),
        );
    }
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    Ok(Schedule {
        cron: cron.map(|(c, _)| c).unwrap_or_default(),
        timezone: timezone.map(|(t, _)| t).unwrap_or_default(),
        start_ms,
        end_ms,
        overlap,
    })
}

/// Field `key` as text: a string, or a TOML date or date-time.
fn text(table: &dyn TableLike, key: &str, problems: &mut Problems) -> Text {
    let v = table.get(key)?;
    if let Some(s) = v.as_str() {
        return Some((s.to_string(), v.span()));
    }
    match v.as_value() {
        Some(toml_edit::Value::Datetime(d)) => Some((d.value().to_string(), v.span())),
        _ => {
            problems.add(v.span(), key, "expected a string".into());
            None
        }
    }
}

/// Field `field` as an instant, read in `zone` when it has no offset.
fn instant(
    field: &str,
    given: &Text,
    zone: Option<&jiff::tz::TimeZone>,
    problems: &mut Problems,
) -> Option<i64> {
    let (text, span) = given.as_ref()?;
    let ms = instant_in(text, zone?);
    if ms.is_none() {
        problems.add(
            span.clone(),
            field,
            format!(
                "`{text}` is not an instant: give 2026-03-01T09:00:00Z, or a date and time \
                 (2026-03-01T09:00:00) or a date (2026-03-01) in the schedule's time zone"
            ),
        );
    }
    ms
}

fn key_span(table: &dyn TableLike, key: &str) -> Option<Range<usize>> {
    table.get_key_value(key).and_then(|(k, _)| k.span())
}

/// An instant written with its offset, or a date and time (or a date, at
/// its first instant) in `tz`.
fn instant_in(text: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    if let Ok(ts) = jiff::Timestamp::from_str(text) {
        return Some(ts.as_millisecond());
    }
    let civil = match jiff::civil::DateTime::from_str(text) {
        Ok(dt) => dt,
        Err(_) => jiff::civil::Date::from_str(text)
            .ok()?
            .to_datetime(jiff::civil::Time::midnight()),
    };
    Some(
        civil
            .to_zoned(tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        jiff::Timestamp::from_str(s).unwrap().as_millisecond()
    }

    fn daily(cron: &str, zone: &str) -> Schedule {
        Schedule {
            cron: cron.into(),
            timezone: zone.into(),
            start_ms: None,
            end_ms: None,
            overlap: false,
        }
    }

    #[test]
    fn a_time_skipped_by_daylight_saving_is_due_when_the_gap_ends() {
        // Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z).
        let s = daily("30 2 * * *", "Europe/Paris");
        let first = s.next_after(ms("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(first, ms("2026-03-29T01:00:00Z"), "03:00 CEST");
        let then = s.next_after(first).unwrap();
        assert_eq!(then, ms("2026-03-30T00:30:00Z"), "02:30 CEST");
    }

    #[test]
    fn a_time_that_occurs_twice_is_due_once() {
        // Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:30
        // is 00:30Z and again 01:30Z.
        let s = daily("30 2 * * *", "Europe/Paris");
        let first = s.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, ms("2026-10-25T00:30:00Z"));
        let then = s.next_after(first).unwrap();
        assert_eq!(then, ms("2026-10-26T01:30:00Z"), "not 01:30Z the same day");
    }

    #[test]
    fn start_and_end_bound_what_is_due() {
        let mut s = daily("0 9 * * *", "UTC");
        s.start_ms = Some(ms("2026-02-01T09:00:00Z"));
        s.end_ms = Some(ms("2026-02-02T09:00:00Z"));
        assert_eq!(
            s.next_after(ms("2026-01-01T00:00:00Z")),
            Some(ms("2026-02-01T09:00:00Z")),
            "the start itself is due"
        );
        assert_eq!(
            s.next_after(ms("2026-02-01T09:00:00Z")),
            Some(ms("2026-02-02T09:00:00Z"))
        );
        assert_eq!(s.next_after(ms("2026-02-02T09:00:00Z")), None);
        assert_eq!(
            s.next_after(ms("2026-02-01T09:00:00Z") + 500),
            Some(ms("2026-02-02T09:00:00Z")),
            "not the same second again"
        );
    }

    fn parsed(text: &str) -> Result<Schedule, Vec<Problem>> {
        let doc = toml_edit::ImDocument::parse(text.to_string()).unwrap();
        parse(&doc["schedule"])
    }

    #[test]
    fn every_problem_is_reported_at_its_field() {
        let problems = parsed(
            "[schedule]\ncron = \"61 * * * *\"\ntimezone = \"Europe/Pari\"\nstart = \"soon\"\nevery = 3\noverlap = \"yes\"\n",
        )
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
        assert_eq!(
            fields,
            [
                "schedule.every",
                "schedule.overlap",
                "schedule.cron",
                "schedule.timezone"
            ],
            "{problems:?}"
        );
        assert!(
            problems[3].2.contains("did you mean `Europe/Paris`"),
            "{problems:?}"
        );
        // With the zone right, the start is read in it.
        let local = parsed(
            "[schedule]\ncron = \"0 9 * * *\"\ntimezone = \"Europe/Paris\"\nstart = 2026-03-01\nend = \"2026-03-31T18:00:00\"\n",
        )
        .unwrap();
        assert_eq!(local.start_ms, Some(ms("2026-02-28T23:00:00Z")));
        assert_eq!(local.end_ms, Some(ms("2026-03-31T16:00:00Z")));
        let backwards = parsed(
            "[schedule]\ncron = \"0 9 * * *\"\ntimezone = \"UTC\"\nstart = 2026-03-02\nend = 2026-03-01\n",
        )
        .unwrap_err();
        assert_eq!(backwards[0].1, "schedule.end");
    }
}
