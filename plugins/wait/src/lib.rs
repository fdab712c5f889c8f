//! Wait: holds each arriving population, durably, for a duration or until
//! a time of day.
//!
//! Config, one of:
//! - `duration` (`7d`, `36h`, `90min`): the population goes on that long
//!   after it arrived;
//! - `until` (`"09:00"`) with `timezone`: the population goes on at the
//!   first such local time at or after it arrived. `timezone` is an IANA
//!   name (`Europe/Paris`), or `"recipient"`: each record goes on at that
//!   hour in its own recipient's zone (a recipient's `timezone`, or a
//!   subscription's `recipient.timezone`), in groups as each zone reaches
//!   the hour; `fallback` (default `UTC`) is the zone of records with none.
//!   A local time skipped by a daylight-saving change is read as the one
//!   after the gap (02:30 becomes 03:30); one that occurs twice, the first.
//!
//! The plugin never sleeps: it asks the host to execute it again when the
//! next group is due, and the host persists that timer, so the wait
//! survives restarts. Groups released are passed on at once (outcome
//! `release-until`); the host tells the next execution when the last
//! release was, so no record goes on twice.

use std::collections::HashMap;

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::filter::Scalar;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    fallback: Option<String>,
}

/// What a config asks for.
enum Plan {
    /// A duration in milliseconds.
    For(i64),
    /// A time of day in one zone.
    Until(Time, TimeZone),
    /// A time of day in each recipient's zone, `fallback` for none.
    Local(Time, TimeZone),
}

fn zone(field: &str, name: &str) -> Result<TimeZone, Vec<ConfigError>> {
    jiff::tz::db().get(name).map_err(|_| {
        vec![ConfigError::new(
            field,
            format!(
                "`{name}` is not an IANA time zone (write e.g. Europe/Paris, America/New_York, UTC)"
            ),
        )]
    })
}

fn plan(json: &str) -> Result<Plan, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    let err = |field: &str, message: String| vec![ConfigError::new(field, message)];
    match (&cfg.duration, &cfg.until) {
        (Some(_), Some(_)) => Err(err("until", "give `duration` or `until`, not both".into())),
        (None, None) => Err(err(
            "",
            "give `duration` (7d) or `until` (\"09:00\") with `timezone`".into(),
        )),
        (Some(d), None) => {
            for field in ["timezone", "fallback"] {
                let given = if field == "timezone" {
                    &cfg.timezone
                } else {
                    &cfg.fallback
                };
                if given.is_some() {
                    return Err(err(
                        field,
                        format!("`{field}` goes with `until`, not `duration`"),
                    ));
                }
            }
            let d = humantime::parse_duration(d).map_err(|e| {
                err(
                    "duration",
                    format!("`{d}` is not a duration ({e}); write e.g. 7d, 36h, 90min"),
                )
            })?;
            let ms =
                i64::try_from(d.as_millis()).map_err(|_| err("duration", "too long".into()))?;
            Ok(Plan::For(ms))
        }
        (None, Some(u)) => {
            let time = Time::strptime("%H:%M", u)
                .or_else(|_| Time::strptime("%H:%M:%S", u))
                .map_err(|_| {
                    err(
                        "until",
                        format!("`{u}` is not a time of day: write HH:MM (09:00)"),
                    )
                })?;
            let Some(tz) = &cfg.timezone else {
                return Err(err(
                    "timezone",
                    "`until` needs `timezone`: an IANA zone, or \"recipient\"".into(),
                ));
            };
            if tz == "recipient" {
                let fallback = zone("fallback", cfg.fallback.as_deref().unwrap_or("UTC"))?;
                return Ok(Plan::Local(time, fallback));
            }
            if cfg.fallback.is_some() {
                return Err(err(
                    "fallback",
                    "`fallback` is for timezone = \"recipient\"".into(),
                ));
            }
            Ok(Plan::Until(time, zone("timezone", tz)?))
        }
    }
}

/// The first instant at or after `after` (ms) at which it is `at` in `tz`.
fn next_local(after: i64, at: Time, tz: &TimeZone) -> Result<i64, String> {
    let from = Timestamp::from_millisecond(after).map_err(|e| e.to_string())?;
    let today = from.to_zoned(tz.clone()).date();
    let on = |date: jiff::civil::Date| -> Result<Zoned, String> {
        // jiff's compatible reading: a skipped time moves past the gap, a
        // repeated one is the first.
        date.to_datetime(at)
            .to_zoned(tz.clone())
            .map_err(|e| e.to_string())
    };
    let mut due = on(today)?;
    if due.timestamp() < from {
        due = on(today.tomorrow().map_err(|e| e.to_string())?)?;
    }
    Ok(due.timestamp().as_millisecond())
}

/// The attribute holding each record's zone: its own `timezone`, or that of
/// a linked record (`recipient.timezone`).
fn zone_path(dimension: &str) -> Result<String, String> {
    let columns = columns(dimension)?;
    if columns.iter().any(|c| c == "timezone") {
        return Ok("timezone".into());
    }
    columns
        .into_iter()
        .find(|c| c.ends_with(".timezone"))
        .ok_or_else(|| {
            format!(
                "timezone = \"recipient\": records of `{dimension}` have no `timezone` \
                 attribute, nor a linked record with one"
            )
        })
}

/// Passes every record of the inputs on along `done`.
fn pass_all(task: &Task) -> Result<Outcome, String> {
    let mut out = Outputs::new();
    for input in &task.inputs {
        let dimension = input.population.dimension();
        // Announced even when empty: the transition is taken either way.
        out.emit("done", &dimension, &[])?;
        for_each_batch(&input.population, |ids| out.emit("done", &dimension, ids))?;
    }
    out.finish()?;
    Ok(Outcome::Done)
}

/// Releases the records whose local hour came since the last release;
/// asks to run again when the next group is due.
fn release_local(task: &Task, at: Time, fallback: &TimeZone) -> Result<Outcome, String> {
    let now = now_ms();
    let mut due_in: HashMap<String, i64> = HashMap::new();
    let fallback_due = next_local(task.started_at, at, fallback)?;
    let mut next: Option<i64> = None;
    let mut out = Outputs::new();
    let mut released = 0u64;
    for input in &task.inputs {
        let dimension = input.population.dimension();
        let field = Field {
            path: zone_path(&dimension)?,
            presence_only: false,
        };
        for_each_batch_with(
            &input.population,
            std::slice::from_ref(&field),
            |ids, cols| {
                let column = &cols[&field.path];
                let mut now_ids = Vec::new();
                for (i, &id) in ids.iter().enumerate() {
                    let due = match column.get(i) {
                        Some(Scalar::Text(name)) => match due_in.get(name) {
                            Some(d) => *d,
                            None => {
                                // A name the import let through but this tz
                                // database lacks: the fallback's hour.
                                let d = match jiff::tz::db().get(name) {
                                    Ok(tz) => next_local(task.started_at, at, &tz)?,
                                    Err(_) => fallback_due,
                                };
                                due_in.insert(name.to_string(), d);
                                d
                            }
                        },
                        _ => fallback_due,
                    };
                    if due > now {
                        next = Some(next.map_or(due, |n: i64| n.min(due)));
                    } else if task.released_at.is_none_or(|r| due > r) {
                        now_ids.push(id);
                    }
                }
                released += now_ids.len() as u64;
                // Nothing due in this batch: a part emitted on would start the
                // next activities on nothing.
                if now_ids.is_empty() {
                    return Ok(());
                }
                out.emit("done", &dimension, &now_ids)
            },
        )?;
    }
    match next {
        Some(t) => {
            out.finish()?;
            Ok(Outcome::ReleaseUntil(t))
        }
        // The last group: a population that arrived empty still takes the
        // transition, as with a duration.
        None if released > 0 || task.released_at.is_none() => {
            for input in &task.inputs {
                out.emit("done", &input.population.dimension(), &[])?;
            }
            out.finish()?;
            Ok(Outcome::Done)
        }
        None => Ok(Outcome::Done),
    }
}

struct Wait;

impl Activity for Wait {
    fn describe() -> Descriptor {
        Descriptor::new(
            "wait",
            env!("CARGO_PKG_VERSION"),
            "Holds a population for a duration, or until a local time of day, durably",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        plan(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let due = match plan(&task.config).map_err(|es| es[0].to_string())? {
            Plan::For(ms) => task.started_at.saturating_add(ms),
            Plan::Until(at, tz) => next_local(task.started_at, at, &tz)?,
            Plan::Local(at, fallback) => return release_local(&task, at, &fallback),
        };
        if now_ms() < due {
            return Ok(Outcome::WaitUntil(due));
        }
        pass_all(&task)
    }
}

crosscast_sdk::export_activity!(Wait);
