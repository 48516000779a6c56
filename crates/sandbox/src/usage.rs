//! Deterministic synthetic usage: device counts, payload counts (totals and breakdown) and
//! notebook minutes, for users and organizations.
//!
//! Every number is a pure function of the subject (`user:<id>` or `org:<id>`, hashed), the
//! subject's [`UsageProfile`] and the day or hour, so repeated calls agree and two callers never
//! see each other's numbers. Nothing is counted before the subject's creation date or after
//! now. Instance organizations report the same numbers through `/instances/…/orgs/{orgId}/…` as
//! through `/orgs/{orgId}/…`.
//!
//! Windows (`start`, `end`, ms since the epoch, as query strings):
//! - `end` absent or `0` (instanceOrg.deviceCounts' documented default) means now; `start`
//!   absent means 30 days before `end`.
//! - Negative values are relative to now (`start=-604800000` is a week ago).
//! - After that, both must lie between 1970 and the end of year 9999, and `start <= end`.
//! - Series have one point per UTC day (device counts, notebook minutes, breakdown by default)
//!   or hour (breakdown with `resolution=3600000`), from the bucket holding `start` to the
//!   bucket holding `end`, dated at the bucket start. At most [`MAX_POINTS`] points (400
//!   beyond; the whole 1970–2038 range fits at day resolution).
//! - `payloadCounts` sums the whole UTC days the window touches. The current day counts as a
//!   whole day in daily figures; hourly points after now are 0.
//!
//! Payload source names (the map keys inside each payload type) are the sandbox's invention;
//! the upstream does not list them. Non-billable types (left out of the breakdown unless
//! `includeNonBillable=true`): `deviceConnect`, `deviceDisconnect`, `flowError`. Byte figures
//! (`asBytes=true`) are counts times a fixed average payload size per type.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{
    error::ApiError,
    query::Query,
    seed::{SeedOrganization, SeedUser, UsageProfile},
    time::iso_ms,
};

/// One day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;
/// One hour in milliseconds.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// The largest number of points (or days summed) one request may ask for.
pub const MAX_POINTS: i64 = 25_000;
/// The window when `start` is absent: 30 days before `end`.
pub const DEFAULT_WINDOW_MS: i64 = 30 * DAY_MS;
/// 9999-12-31T23:59:59.999Z, the last instant `toISOString()` prints with four year digits.
const MAX_MS: i64 = 253_402_300_799_999;

/// Payload types of `payloadStats`, with the sandbox's share of traffic, average size in bytes,
/// billability and source names.
struct PayloadType {
    name: &'static str,
    share: f64,
    bytes: u64,
    billable: bool,
    sources: &'static [&'static str],
}

const PAYLOAD_TYPES: [PayloadType; 19] = [
    PayloadType {
        name: "appFile",
        share: 0.002,
        bytes: 48_000,
        billable: true,
        sources: &["files"],
    },
    PayloadType {
        name: "dataTable",
        share: 0.03,
        bytes: 350,
        billable: true,
        sources: &["flow", "rest"],
    },
    PayloadType {
        name: "deviceCreate",
        share: 0.001,
        bytes: 900,
        billable: true,
        sources: &["rest", "flow"],
    },
    PayloadType {
        name: "deviceCommand",
        share: 0.04,
        bytes: 180,
        billable: true,
        sources: &["flow", "rest"],
    },
    PayloadType {
        name: "deviceConnect",
        share: 0.015,
        bytes: 120,
        billable: false,
        sources: &["mqtt"],
    },
    PayloadType {
        name: "deviceDisconnect",
        share: 0.015,
        bytes: 120,
        billable: false,
        sources: &["mqtt"],
    },
    PayloadType {
        name: "deviceState",
        share: 0.55,
        bytes: 240,
        billable: true,
        sources: &["mqtt", "rest", "flow"],
    },
    PayloadType {
        name: "endpoint",
        share: 0.05,
        bytes: 1_100,
        billable: true,
        sources: &["experience"],
    },
    PayloadType {
        name: "event",
        share: 0.02,
        bytes: 420,
        billable: true,
        sources: &["flow", "rest"],
    },
    PayloadType {
        name: "flowError",
        share: 0.005,
        bytes: 600,
        billable: false,
        sources: &["flow"],
    },
    PayloadType {
        name: "inboundEmail",
        share: 0.001,
        bytes: 9_000,
        billable: true,
        sources: &["email"],
    },
    PayloadType {
        name: "integration",
        share: 0.02,
        bytes: 380,
        billable: true,
        sources: &["mqtt", "awsIot"],
    },
    PayloadType {
        name: "mqttIn",
        share: 0.08,
        bytes: 310,
        billable: true,
        sources: &["mqtt"],
    },
    PayloadType {
        name: "mqttOut",
        share: 0.05,
        bytes: 260,
        billable: true,
        sources: &["mqtt"],
    },
    PayloadType {
        name: "notebook",
        share: 0.001,
        bytes: 2_000,
        billable: true,
        sources: &["notebook"],
    },
    PayloadType {
        name: "resourceJob",
        share: 0.002,
        bytes: 300,
        billable: true,
        sources: &["flow"],
    },
    PayloadType {
        name: "timer",
        share: 0.05,
        bytes: 64,
        billable: true,
        sources: &["timer"],
    },
    PayloadType {
        name: "virtualButton",
        share: 0.002,
        bytes: 150,
        billable: true,
        sources: &["rest"],
    },
    PayloadType {
        name: "webhook",
        share: 0.06,
        bytes: 1_300,
        billable: true,
        sources: &["webhook"],
    },
];

// Salts keep the different series of one subject independent.
const SALT_DEVICES: u64 = 0x0d01;
const SALT_CHURN: u64 = 0x0d02;
const SALT_PAYLOAD: u64 = 0x0a00;
const SALT_TYPE_USED: u64 = 0x0b00;
const SALT_HOURS: u64 = 0x0c00;
const SALT_NOTEBOOK: u64 = 0x0e00;
const SALT_PROFILE: u64 = 0x0f00;

/// Whose usage is reported.
#[derive(Debug, Clone)]
pub(crate) struct UsageSubject {
    seed: u64,
    created_ms: i64,
    profile: UsageProfile,
}

impl UsageSubject {
    fn new(key: &str, created: DateTime<Utc>, profile: Option<UsageProfile>) -> Self {
        let seed = fnv1a(key);
        let profile = profile.unwrap_or_else(|| {
            let bits = mix(seed ^ SALT_PROFILE);
            UsageProfile {
                devices: 10 + bits % 490,
                payloads_per_day: 2_000 + (bits >> 16) % 198_000,
                notebook_minutes_per_day: (bits >> 40) % 60,
            }
        });
        UsageSubject {
            seed,
            created_ms: created.timestamp_millis(),
            profile,
        }
    }

    /// A user's own usage (applications the user owns).
    pub(crate) fn user(user: &SeedUser) -> Self {
        Self::new(&format!("user:{}", user.id), user.creation_date, user.usage)
    }

    /// An organization's usage.
    pub(crate) fn org(org: &SeedOrganization) -> Self {
        Self::new(&format!("org:{}", org.id), org.creation_date, org.usage)
    }

    fn created_day(&self) -> i64 {
        self.created_ms.div_euclid(DAY_MS)
    }

    /// 0 before creation, then a 90-day ramp to the profile's share.
    fn ramp(&self, day: i64) -> f64 {
        let age = day - self.created_day();
        if age < 0 {
            0.0
        } else {
            ((age + 1) as f64 / 90.0).min(1.0)
        }
    }

    /// Devices in existence at the end of `day`.
    fn device_total(&self, day: i64, today: i64) -> i64 {
        if day > today {
            return 0;
        }
        let target = self.profile.devices as f64;
        // Up to 4% day-to-day wobble around the ramped target.
        let level = 0.96 + 0.04 * unit(self.seed, SALT_DEVICES, day);
        (target * level * self.ramp(day)).round() as i64
    }

    /// `(created, deleted, total)` for one day; `total(d) = total(d-1) + created - deleted`.
    fn device_day(&self, day: i64, today: i64) -> (i64, i64, i64) {
        let total = self.device_total(day, today);
        let before = self.device_total(day - 1, today);
        if total == 0 && before == 0 {
            return (0, 0, 0);
        }
        // Some devices come and go on the same day even when the total is flat.
        let churn =
            (unit(self.seed, SALT_CHURN, day) * self.profile.devices as f64 * 0.01).floor() as i64;
        let churn = churn.min(before);
        (
            (total - before).max(0) + churn,
            (before - total).max(0) + churn,
            total,
        )
    }

    /// Payloads of one type and source on one day.
    fn payloads(&self, day: i64, today: i64, type_index: usize, source_index: usize) -> u64 {
        let kind = &PAYLOAD_TYPES[type_index];
        if day > today || day < self.created_day() {
            return 0;
        }
        // Each subject skips a few of the rarer payload types altogether.
        let used = kind.share >= 0.05
            || !mix(self.seed ^ (SALT_TYPE_USED + type_index as u64)).is_multiple_of(4);
        if !used {
            return 0;
        }
        let weekday = (day + 4).rem_euclid(7); // 1970-01-01 was a Thursday; 0 = Sunday.
        let weekly = if weekday == 0 || weekday == 6 {
            0.75
        } else {
            1.0
        };
        let per_source =
            self.profile.payloads_per_day as f64 * kind.share / kind.sources.len() as f64;
        let salt = SALT_PAYLOAD + (type_index as u64) * 16 + source_index as u64;
        let jitter = 0.7 + 0.6 * unit(self.seed, salt, day);
        (per_source * self.ramp(day) * weekly * jitter).round() as u64
    }

    /// Sum of one day's payloads (or bytes), billable only unless `non_billable`.
    fn payload_day_total(&self, day: i64, today: i64, as_bytes: bool, non_billable: bool) -> u64 {
        let mut total = 0;
        for (type_index, kind) in PAYLOAD_TYPES.iter().enumerate() {
            if !kind.billable && !non_billable {
                continue;
            }
            for source_index in 0..kind.sources.len() {
                let count = self.payloads(day, today, type_index, source_index);
                total += if as_bytes { count * kind.bytes } else { count };
            }
        }
        total
    }

    /// The 24 hourly shares of one day's `total`, summing exactly to it.
    fn split_day(&self, day: i64, total: u64) -> [u64; 24] {
        let mut weights = [0.0; 24];
        for (hour, weight) in weights.iter_mut().enumerate() {
            let business = if (7..19).contains(&hour) { 1.0 } else { 0.35 };
            *weight = business * (0.8 + 0.4 * unit(self.seed, SALT_HOURS, day * 24 + hour as i64));
        }
        let sum: f64 = weights.iter().sum();
        let mut parts = [0u64; 24];
        let mut given = 0;
        for hour in 0..23 {
            parts[hour] = (total as f64 * weights[hour] / sum).floor() as u64;
            given += parts[hour];
        }
        parts[23] = total.saturating_sub(given);
        parts
    }

    /// `(minutes, completed, canceled, errored, timeout)` of notebook runs on one day.
    fn notebook_day(&self, day: i64, today: i64) -> [u64; 5] {
        let per_day = self.profile.notebook_minutes_per_day as f64;
        if per_day == 0.0 || day > today || day < self.created_day() {
            return [0; 5];
        }
        let bits = mix(self.seed ^ mix(SALT_NOTEBOOK.wrapping_add(day as u64)));
        if bits % 10 < 3 {
            return [0; 5]; // Quiet days without any run.
        }
        let minutes = (per_day * self.ramp(day) * 2.0 * unit(self.seed, SALT_NOTEBOOK + 1, day))
            .round() as u64;
        let runs = minutes.div_ceil(4);
        let errored = runs / 12 + (bits >> 8) % 2;
        let canceled = (bits >> 16) % 2;
        let timeout = u64::from((bits >> 24).is_multiple_of(20));
        let completed = runs.saturating_sub(errored + canceled + timeout);
        [
            minutes,
            completed,
            canceled,
            errored.min(runs),
            timeout.min(runs),
        ]
    }
}

/// Which report to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// `deviceCounts`.
    DeviceCounts,
    /// `notebookMinuteCounts`.
    NotebookMinuteCounts,
    /// `payloadStats`.
    PayloadCounts {
        /// `asBytes`.
        as_bytes: bool,
    },
    /// `payloadCountsBreakdown`.
    Breakdown {
        /// `resolution` in ms (a day or an hour).
        resolution_ms: i64,
        /// `asBytes`.
        as_bytes: bool,
        /// `includeNonBillable`.
        include_non_billable: bool,
    },
}

impl Report {
    /// Reads the report's flags from a validated query.
    pub(crate) fn payload_counts(query: &Query) -> Self {
        Report::PayloadCounts {
            as_bytes: query.flag("asBytes"),
        }
    }

    /// Reads the breakdown's flags from a validated query.
    pub(crate) fn breakdown(query: &Query) -> Self {
        let resolution_ms = if query.text("resolution") == Some("3600000") {
            HOUR_MS
        } else {
            DAY_MS
        };
        Report::Breakdown {
            resolution_ms,
            as_bytes: query.flag("asBytes"),
            include_non_billable: query.flag("includeNonBillable"),
        }
    }

    fn resolution_ms(self) -> i64 {
        match self {
            Report::Breakdown { resolution_ms, .. } => resolution_ms,
            _ => DAY_MS,
        }
    }
}

/// A validated usage request, computed after the store's lock is released.
#[derive(Debug, Clone)]
pub(crate) struct UsageRequest {
    subject: UsageSubject,
    report: Report,
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
}

impl UsageRequest {
    /// Resolves and checks the window of `query` (see the module docs).
    pub(crate) fn new(
        subject: UsageSubject,
        report: Report,
        query: &Query,
        now: DateTime<Utc>,
    ) -> Result<Self, ApiError> {
        let now_ms = now.timestamp_millis();
        let resolve = |name: &str, value: i64| -> Result<i64, ApiError> {
            let absolute = if value < 0 {
                now_ms.saturating_add(value)
            } else {
                value
            };
            if !(0..=MAX_MS).contains(&absolute) {
                return Err(ApiError::validation(format!(
                    "\"{name}\" must be between 0 and {MAX_MS} ms since the epoch (negative values count back from now)"
                )));
            }
            Ok(absolute)
        };
        let end_ms = match query.int("end") {
            None | Some(0) => now_ms,
            Some(end) => resolve("end", end)?,
        };
        let start_ms = match query.int("start") {
            None => end_ms.saturating_sub(DEFAULT_WINDOW_MS).max(0),
            Some(start) => resolve("start", start)?,
        };
        if start_ms > end_ms {
            return Err(ApiError::validation("\"start\" must not be after \"end\""));
        }
        let resolution = report.resolution_ms();
        let points = end_ms.div_euclid(resolution) - start_ms.div_euclid(resolution) + 1;
        if points > MAX_POINTS {
            return Err(ApiError::validation(format!(
                "the window from \"start\" to \"end\" spans {points} points at resolution {resolution} ms; at most {MAX_POINTS} are allowed"
            )));
        }
        Ok(UsageRequest {
            subject,
            report,
            start_ms,
            end_ms,
            now_ms,
        })
    }

    /// The response body.
    pub(crate) fn render(&self) -> Value {
        match self.report {
            Report::DeviceCounts => self.series(DAY_MS, |day, today, _| {
                let (created, deleted, total) = self.subject.device_day(day, today);
                json!({ "created": created, "deleted": deleted, "total": total })
            }),
            Report::NotebookMinuteCounts => self.series(DAY_MS, |day, today, _| {
                let [minutes, completed, canceled, errored, timeout] =
                    self.subject.notebook_day(day, today);
                json!({
                    "minutes": minutes, "completed": completed, "canceled": canceled,
                    "errored": errored, "timeout": timeout
                })
            }),
            Report::PayloadCounts { as_bytes } => payload_stats(
                &self.subject,
                self.start_ms,
                self.end_ms,
                self.now_ms,
                as_bytes,
            ),
            Report::Breakdown {
                resolution_ms,
                as_bytes,
                include_non_billable,
            } => {
                let mut days: HashMap<i64, [u64; 24]> = HashMap::new();
                self.series(resolution_ms, |day, today, bucket_ms| {
                    let value = if resolution_ms == DAY_MS {
                        self.subject
                            .payload_day_total(day, today, as_bytes, include_non_billable)
                    } else {
                        let hours = days.entry(day).or_insert_with(|| {
                            let total = self.subject.payload_day_total(
                                day,
                                today,
                                as_bytes,
                                include_non_billable,
                            );
                            self.subject.split_day(day, total)
                        });
                        let hour = (bucket_ms.rem_euclid(DAY_MS) / HOUR_MS) as usize;
                        // An hour that has not started yet has no payloads.
                        if bucket_ms > self.now_ms {
                            0
                        } else {
                            hours[hour.min(23)]
                        }
                    };
                    json!({ "value": value })
                })
            }
        }
    }

    /// `{start, end, counts: [{date, ...point}]}` with one point per bucket.
    fn series(&self, resolution_ms: i64, mut point: impl FnMut(i64, i64, i64) -> Value) -> Value {
        let today = self.now_ms.div_euclid(DAY_MS);
        let first = self.start_ms.div_euclid(resolution_ms);
        let last = self.end_ms.div_euclid(resolution_ms);
        let counts: Vec<Value> = (first..=last)
            .map(|bucket| {
                let bucket_ms = bucket * resolution_ms;
                let mut value = point(bucket_ms.div_euclid(DAY_MS), today, bucket_ms);
                if let Value::Object(fields) = &mut value {
                    fields.insert("date".into(), Value::String(iso_ms(bucket_ms)));
                }
                value
            })
            .collect();
        json!({ "start": iso_ms(self.start_ms), "end": iso_ms(self.end_ms), "counts": counts })
    }
}

/// The `payloadStats` object for the whole UTC days touching `[start_ms, end_ms]`.
pub(crate) fn payload_stats(
    subject: &UsageSubject,
    start_ms: i64,
    end_ms: i64,
    now_ms: i64,
    as_bytes: bool,
) -> Value {
    let today = now_ms.div_euclid(DAY_MS);
    let days = start_ms.div_euclid(DAY_MS)..=end_ms.div_euclid(DAY_MS);
    let mut stats = Map::new();
    for (type_index, kind) in PAYLOAD_TYPES.iter().enumerate() {
        let mut sources = Map::new();
        for (source_index, source) in kind.sources.iter().enumerate() {
            let count: u64 = days
                .clone()
                .map(|day| subject.payloads(day, today, type_index, source_index))
                .sum();
            let figure = if as_bytes { count * kind.bytes } else { count };
            sources.insert((*source).to_string(), json!(figure));
        }
        stats.insert(kind.name.to_string(), Value::Object(sources));
    }
    Value::Object(stats)
}

/// Devices in existence today.
pub(crate) fn device_count(subject: &UsageSubject, now: DateTime<Utc>) -> i64 {
    let today = now.timestamp_millis().div_euclid(DAY_MS);
    subject.device_total(today, today)
}

/// `(minutes, runs)` of notebook executions from `start` to `now`.
pub(crate) fn notebook_totals(
    subject: &UsageSubject,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (u64, u64) {
    let today = now.timestamp_millis().div_euclid(DAY_MS);
    let first = start.timestamp_millis().div_euclid(DAY_MS);
    (first..=today).fold((0, 0), |(minutes, runs), day| {
        let [day_minutes, completed, canceled, errored, timeout] = subject.notebook_day(day, today);
        (
            minutes + day_minutes,
            runs + completed + canceled + errored + timeout,
        )
    })
}

/// FNV-1a: a stable string hash (std's hasher is randomly keyed per process).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The SplitMix64 finalizer: scrambles all bits of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform number in `[0, 1)` for (subject, series, index).
fn unit(seed: u64, salt: u64, index: i64) -> f64 {
    let bits = mix(seed
        ^ mix(salt
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index as u64)));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{BREAKDOWN, RANGE, parse_query};

    fn subject(key: &str) -> UsageSubject {
        let created = DateTime::from_timestamp_millis(1_600_000_000_000).unwrap_or_default();
        UsageSubject::new(key, created, None)
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_767_225_600_000).unwrap_or_default() // 2026-01-01
    }

    #[test]
    fn device_totals_add_up() {
        let subject = subject("org:a");
        let today = now().timestamp_millis() / DAY_MS;
        let mut total = subject.device_total(today - 400, today);
        for day in today - 399..=today {
            let (created, deleted, day_total) = subject.device_day(day, today);
            total += created - deleted;
            assert_eq!(total, day_total, "day {day}");
            assert!(created >= 0 && deleted >= 0);
        }
    }

    #[test]
    fn hourly_split_sums_to_the_day() {
        let subject = subject("user:b");
        for total in [0, 1, 23, 24, 999_999] {
            assert_eq!(subject.split_day(20_000, total).iter().sum::<u64>(), total);
        }
    }

    #[test]
    fn windows() {
        let query =
            parse_query(Some("start=1767139200000&end=1767225600000"), RANGE).expect("valid");
        let request = UsageRequest::new(subject("org:a"), Report::DeviceCounts, &query, now())
            .expect("valid");
        let body = request.render();
        assert_eq!(body["start"], "2025-12-31T00:00:00.000Z");
        assert_eq!(body["end"], "2026-01-01T00:00:00.000Z");
        assert_eq!(body["counts"].as_array().map(Vec::len), Some(2));

        let query = parse_query(None, RANGE).expect("valid");
        let body = UsageRequest::new(subject("org:a"), Report::DeviceCounts, &query, now())
            .expect("valid")
            .render();
        assert_eq!(body["counts"].as_array().map(Vec::len), Some(31));

        let query = parse_query(Some("start=2&end=1"), RANGE).expect("valid");
        assert!(UsageRequest::new(subject("org:a"), Report::DeviceCounts, &query, now()).is_err());

        let query = parse_query(
            Some("start=0&end=1465790400000&resolution=3600000"),
            BREAKDOWN,
        )
        .expect("valid");
        let report = Report::breakdown(&query);
        assert!(UsageRequest::new(subject("org:a"), report, &query, now()).is_err());
        let query = parse_query(Some("start=0&end=1465790400000"), BREAKDOWN).expect("valid");
        assert!(
            UsageRequest::new(subject("org:a"), Report::breakdown(&query), &query, now()).is_ok()
        );
    }

    #[test]
    fn breakdown_matches_payload_counts() {
        let query = parse_query(
            Some("start=1764547200000&end=1767139200000&includeNonBillable=true"),
            BREAKDOWN,
        )
        .expect("valid");
        let subject = subject("org:c");
        let breakdown =
            UsageRequest::new(subject.clone(), Report::breakdown(&query), &query, now())
                .expect("valid");
        let sum: u64 = breakdown.render()["counts"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .filter_map(|point| point["value"].as_u64())
                    .sum()
            })
            .unwrap_or_default();
        let stats = payload_stats(
            &subject,
            1_764_547_200_000,
            1_767_139_200_000,
            now().timestamp_millis(),
            false,
        );
        let total: u64 = stats
            .as_object()
            .map(|types| {
                types
                    .values()
                    .flat_map(|sources| sources.as_object().into_iter().flat_map(|s| s.values()))
                    .filter_map(Value::as_u64)
                    .sum()
            })
            .unwrap_or_default();
        assert_eq!(sum, total);
        assert!(total > 0);
    }

    #[test]
    fn subjects_differ() {
        let (a, b) = (subject("user:a"), subject("user:b"));
        let now_ms = now().timestamp_millis();
        assert_ne!(
            payload_stats(&a, now_ms - 7 * DAY_MS, now_ms, now_ms, false),
            payload_stats(&b, now_ms - 7 * DAY_MS, now_ms, now_ms, false)
        );
    }
}
