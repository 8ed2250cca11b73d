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
