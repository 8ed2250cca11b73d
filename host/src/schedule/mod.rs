//! Cron schedules of pipelines, parsed with croner, evaluated in a time zone.
//!
//! Daylight-saving changes follow croner's rules (the Open Cron Pattern
//! Specification): in a spring-forward gap a fixed-time job runs at the first
//! valid time after the gap and interval jobs skip the missing times; in a
//! fall-back overlap a fixed-time job runs once and interval jobs run in both
//! passes. Searches move in real time, so a schedule never fires twice for
//! one instant.

use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A parsed schedule: when a pipeline runs.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub expression: String,
    pub timezone: Tz,
    cron: Cron,
}

/// The tick a scheduler handles next, and the ticks it let pass: when
/// handling one tick took past the following ones (a slow store, a loaded
/// or suspended machine), the latest that passed is handled and the others
/// are skipped, never run late one after another nor lost without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub tick: DateTime<Utc>,
    /// The first skipped ticks, oldest first (at most [`Due::LISTED`]).
    pub skipped: Vec<DateTime<Utc>>,
    /// How many ticks were skipped in all; [`Due::COUNTED`] means at least
    /// that many (counting is bounded: a year of one-second ticks would
    /// otherwise take the scheduler seconds to count).
    pub skipped_count: u64,
}

impl Due {
    /// Skipped ticks named one by one; the rest are only counted.
    pub const LISTED: usize = 10;
    /// The bound on counting skipped ticks.
    pub const COUNTED: u64 = 100_000;
}

/// What is wrong with a schedule, with the field at fault where one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// Byte offset of the bad field within the expression.
    pub offset: Option<usize>,
    pub message: String,
}

const FIELD_NAMES_5: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];
const FIELD_NAMES_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
];

fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).build()
}

impl Schedule {
    /// `expression` has 5 fields (minute granularity), 6 (with seconds first)
    /// or is a shortcut such as `@hourly`; `timezone` is an IANA name, UTC by default.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| ScheduleError {
                offset: None,
                message: format!(
                    "timezone `{name}` is not an IANA time zone name; write e.g. \"Europe/Stockholm\" or \"UTC\""
                ),
            })?,
        };
        let cron = parser()
            .parse(expression.trim())
            .map_err(|e| locate(expression, e))?;
        Ok(Schedule {
            expression: expression.trim().to_owned(),
            timezone,
            cron,
        })
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire time at or before `at`.
    fn at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The tick to handle at `now`, given the last tick handled (none at
    /// start, when only future ticks count): the schedule's next after it,
    /// or, when later ticks have passed as well, the latest of them, with
    /// the ones before it reported as skipped. None when the schedule has no
    /// future fire time.
    pub fn due(&self, handled: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Due> {
        let first = self.next_after(handled.unwrap_or(now))?;
        let latest = match self.at_or_before(now) {
            Some(latest) if latest > first => latest,
            _ => {
                return Some(Due {
                    tick: first,
                    skipped: Vec::new(),
                    skipped_count: 0,
                });
            }
        };
        let mut skipped = Vec::new();
        let mut skipped_count = 0;
        let mut cursor = Some(first);
        while let Some(tick) = cursor.filter(|t| *t < latest) {
            if skipped_count == Due::COUNTED {
                break;
            }
            if skipped.len() < Due::LISTED {
                skipped.push(tick);
            }
            skipped_count += 1;
            cursor = self.next_after(tick);
        }
        Some(Due {
            tick: latest,
            skipped,
            skipped_count,
        })
    }

    /// The next `count` fire times after `after`, in the schedule's zone.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(count);
        let mut cursor = after;
        while out.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            out.push(next.with_timezone(&self.timezone));
            cursor = next;
        }
        out
    }

    /// Whether a fire time fell in `(from, to]`: a run missed while down.
    pub fn fired_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
        self.next_after(from).is_some_and(|t| t <= to)
    }

    pub fn describe(&self) -> String {
        self.cron.describe()
    }
}

/// croner says what is wrong but not where: try each field alone (the others
/// `*`) to find the one at fault, so the error can point at it.
fn locate(expression: &str, error: croner::errors::CronError) -> ScheduleError {
    let trimmed = expression.trim();
    let lead = expression.len() - expression.trim_start().len();
    let fields: Vec<(usize, &str)> = trimmed
        .split_whitespace()
        .map(|f| (f.as_ptr() as usize - trimmed.as_ptr() as usize + lead, f))
        .collect();
    let names: &[&str] = match fields.len() {
        5 => &FIELD_NAMES_5,
        6 => &FIELD_NAMES_6,
        _ => {
            return ScheduleError {
                offset: None,
                message: format!(
                    "schedule `{trimmed}` has {} fields; write 5 (minute hour day-of-month month day-of-week), \
                     6 (with seconds first) or a shortcut such as @hourly",
                    fields.len()
                ),
            };
        }
    };
    for (index, (offset, field)) in fields.iter().enumerate() {
        let probe: Vec<&str> = (0..fields.len())
            .map(|i| if i == index { *field } else { "*" })
            .collect();
        if let Err(field_error) = parser().parse(&probe.join(" ")) {
            return ScheduleError {
                offset: Some(*offset),
                message: format!(
                    "schedule field {} ({}) `{field}` is invalid: {field_error}",
                    index + 1,
                    names[index]
                ),
            };
        }
    }
    ScheduleError {
        offset: None,
        message: format!("schedule `{trimmed}` is invalid: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(h: u32, m: u32, s: u32, ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap() + chrono::Duration::milliseconds(ms)
    }

    #[test]
    fn due_is_the_next_tick_when_none_passed() {
        let s = Schedule::parse("* * * * * *", None).unwrap();
        // At start nothing counts as passed, not even the second just gone.
        let due = s.due(None, at(10, 0, 3, 200)).unwrap();
        assert_eq!((due.tick, due.skipped_count), (at(10, 0, 4, 0), 0));
        // Handled in time: the following second.
        let due = s.due(Some(at(10, 0, 3, 0)), at(10, 0, 3, 40)).unwrap();
        assert_eq!((due.tick, due.skipped_count), (at(10, 0, 4, 0), 0));
        // Handled late, but only the next tick has passed: it is run late, not skipped.
        let due = s.due(Some(at(10, 0, 3, 0)), at(10, 0, 4, 900)).unwrap();
        assert_eq!((due.tick, due.skipped_count), (at(10, 0, 4, 0), 0));
    }

    #[test]
    fn of_several_passed_ticks_the_latest_is_due_and_the_others_are_skipped() {
        let s = Schedule::parse("* * * * * *", None).unwrap();
        // Handling 10:00:00 took until 10:00:03.2: 01 and 02 are skipped, 03 runs.
        let due = s.due(Some(at(10, 0, 0, 0)), at(10, 0, 3, 200)).unwrap();
        assert_eq!(due.tick, at(10, 0, 3, 0));
        assert_eq!(due.skipped, [at(10, 0, 1, 0), at(10, 0, 2, 0)]);
        assert_eq!(due.skipped_count, 2);
        // A tick exactly at "now" is due.
        let due = s.due(Some(at(10, 0, 0, 0)), at(10, 0, 2, 0)).unwrap();
        assert_eq!((due.tick, due.skipped_count), (at(10, 0, 2, 0), 1));
        // Minute schedule in a zone: the same rule in that zone's minutes.
        let s = Schedule::parse("*/15 * * * *", Some("Europe/Stockholm")).unwrap();
        let due = s.due(Some(at(9, 0, 0, 0)), at(9, 50, 0, 0)).unwrap();
        assert_eq!(due.tick, at(9, 45, 0, 0));
        assert_eq!(due.skipped, [at(9, 15, 0, 0), at(9, 30, 0, 0)]);
    }

    #[test]
    fn a_long_sleep_lists_ten_skipped_ticks_and_counts_the_rest_within_a_bound() {
        let s = Schedule::parse("* * * * * *", None).unwrap();
        // A machine suspended for an hour: 3599 ticks skipped, 10 listed.
        let due = s.due(Some(at(10, 0, 0, 0)), at(11, 0, 0, 500)).unwrap();
        assert_eq!(due.tick, at(11, 0, 0, 0));
        assert_eq!(due.skipped_count, 3599);
        assert_eq!(due.skipped.len(), Due::LISTED);
        assert_eq!(due.skipped[9], at(10, 0, 10, 0));
        // Thirty days of one-second ticks: counted up to the bound, and the
        // latest tick is still found exactly.
        let handled = at(10, 0, 0, 0);
        let now = handled + chrono::Duration::days(30) + chrono::Duration::milliseconds(1500);
        let due = s.due(Some(handled), now).unwrap();
        assert_eq!(
            due.tick,
            handled + chrono::Duration::days(30) + chrono::Duration::seconds(1)
        );
        assert_eq!(due.skipped_count, Due::COUNTED);
    }

    #[test]
    fn five_and_six_fields_and_shortcuts() {
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let s = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(after).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 15, 0).unwrap()
        );
        let s = Schedule::parse("*/10 * * * * *", None).unwrap();
        assert_eq!(
            s.next_after(after).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 10).unwrap()
        );
        let s = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            s.next_after(after).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 1, 1, 0, 0).unwrap()
        );
    }

    #[test]
    fn errors_point_at_the_field() {
        let e = Schedule::parse("0 25 * * *", None).unwrap_err();
        assert_eq!(e.offset, Some(2), "{e}");
        assert!(e.message.starts_with("schedule field 2 (hour) `25`"), "{e}");
        let e = Schedule::parse("* * * * * * * *", None).unwrap_err();
        assert!(e.message.contains("8 fields"), "{e}");
        let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.message.contains("IANA"), "{e}");
    }

    #[test]
    fn time_zones_and_the_spring_forward_gap() {
        // Europe/Stockholm skips 02:00-03:00 on 2026-03-29.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Stockholm")).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let times: Vec<String> = s
            .upcoming(after, 3)
            .iter()
            .map(|t| t.with_timezone(&Utc).to_rfc3339())
            .collect();
        assert_eq!(
            times,
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // the gap: first valid time, 03:00 CEST
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
    }
}
