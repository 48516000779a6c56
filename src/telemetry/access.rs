//! The access log: one line per RPC (target [`ACCESS_TARGET`]), every field kept, written off
//! the request path by [`AccessSink`](super::access_sink::AccessSink).
//!
//! In JSON (what production runs) the call writes its line straight into the sink: no
//! `tracing` event, so no dispatch through the registry, no per-layer filters and no field
//! visiting, which at cache-hit rates cost more than a tenth of the RPC. The shape is the one
//! tracing-subscriber's JSON formatter gives the same event (`timestamp`, `level`, `message`,
//! the fields in order, `target`; strings and numbers written by serde_json), which the tests
//! below pin; the date part of the timestamp is formatted once a second. `RUST_LOG` still
//! decides, by its directives for the access target, whether lines are written.
//!
//! The line is also a `tracing` event when a layer wants it: the text log (a terminal), and
//! the span of a sampled RPC, where the OTLP exporter records it.

use std::{
    cell::RefCell,
    fmt::Write as _,
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing_subscriber::{EnvFilter, layer::SubscriberExt};

use super::access_sink::{AccessSink, DroppedLines};

/// The target of the access log: one line per RPC.
pub const ACCESS_TARGET: &str = "wnology_gateway::access";

/// Access-log lines held in memory while the sink is slow; beyond that they are dropped and
/// counted (`wnology_gateway_access_log_dropped_total`).
pub const ACCESS_LOG_BUFFER_LINES: usize = 64 * 1024;

/// Counts the access-log lines dropped because the sink did not keep up.
static DROPPED: OnceLock<DroppedLines> = OnceLock::new();

/// The JSON access log, once installed: lines go straight into its sink.
static JSON_SINK: OnceLock<AccessSink> = OnceLock::new();

/// Access-log lines dropped so far because the log sink (stdout) did not keep up.
pub fn access_log_dropped() -> u64 {
    DROPPED.get().map_or(0, DroppedLines::get)
}

/// Makes `dropped` the counter [`access_log_dropped`] reads (the first access log installed).
pub(super) fn count_drops(dropped: DroppedLines) {
    let _ = DROPPED.set(dropped);
}

/// Makes `sink` the JSON access log every [`AccessLine::log`] writes to (the first installed).
pub(super) fn install_json(sink: AccessSink) {
    let _ = JSON_SINK.set(sink);
}

/// Whether `filter` (built from `RUST_LOG`) lets INFO events of [`ACCESS_TARGET`] through.
///
/// Asked once, at start-up, of a subscriber holding only that filter, so its directives for
/// the target and level decide as they would for the event (directives on span fields cannot
/// apply to a line that is written without one).
pub(super) fn access_enabled(filter: EnvFilter) -> bool {
    let probe = tracing_subscriber::registry().with(filter);
    tracing::subscriber::with_default(
        probe,
        || tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO),
    )
}

/// One RPC's access-log line, its fields in the order they are written.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The gRPC service, `wnology.v1.MeService` (`rpc` is `service/method`).
    pub service: &'a str,
    /// The method, `PayloadCounts`.
    pub method: &'a str,
    /// The gRPC status code's name, `OK`.
    pub code: &'a str,
    /// From the first byte decoded to the answer.
    pub latency: Duration,
    /// How the cache answered (`hit`, `miss`, `stale`, …), or `-`.
    pub cache: &'a str,
    /// The upstream's HTTP status, when the upstream was called.
    pub upstream_status: Option<u16>,
    /// The call's `x-request-id`.
    pub request_id: &'a str,
}

thread_local! {
    /// The line being built.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The formatted date and time of the last whole second seen on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl AccessLine<'_> {
    /// Logs the line: into the JSON access log when one is installed, and as a `tracing`
    /// event for the text log, or for `span` when it is recorded (a sampled RPC).
    pub fn log(&self, span: &tracing::Span) {
        let sink = JSON_SINK.get();
        if let Some(sink) = sink {
            self.append_to(sink);
        }
        if sink.is_none() || !span.is_disabled() {
            self.event(span);
        }
    }

    fn append_to(&self, sink: &AccessSink) {
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return; // unreachable: nothing logs while a line is formatted
            };
            line.clear();
            self.write_json(&mut line, SystemTime::now());
            sink.append(&line);
        });
    }

    /// The line as a `tracing` event of [`ACCESS_TARGET`], child of `span`.
    fn event(&self, span: &tracing::Span) {
        tracing::info!(
            target: "wnology_gateway::access",
            parent: span,
            rpc = %format_args!("{}/{}", self.service, self.method),
            code = self.code,
            latency_ms = self.latency_ms(),
            cache = self.cache,
            upstream_status = %OptionalStatus(self.upstream_status),
            request_id = self.request_id,
            "rpc",
        );
    }

    fn latency_ms(&self) -> f64 {
        self.latency.as_secs_f64() * 1000.0
    }

    /// `{"timestamp":…,"level":"INFO","message":"rpc",<fields>,"target":…}` and a newline.
    fn write_json(&self, line: &mut Vec<u8>, now: SystemTime) {
        line.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(line, now);
        line.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"rpc\",\"rpc\":");
        json(line, &format_args!("{}/{}", self.service, self.method));
        line.extend_from_slice(b",\"code\":");
        json(line, self.code);
        line.extend_from_slice(b",\"latency_ms\":");
        json(line, &self.latency_ms());
        line.extend_from_slice(b",\"cache\":");
        json(line, self.cache);
        line.extend_from_slice(b",\"upstream_status\":");
        json(
            line,
            &format_args!("{}", OptionalStatus(self.upstream_status)),
        );
        line.extend_from_slice(b",\"request_id\":");
        json(line, self.request_id);
        line.extend_from_slice(b",\"target\":");
        json(line, ACCESS_TARGET);
        line.extend_from_slice(b"}\n");
    }
}

/// A value as serde_json writes it (strings escaped, numbers as ryu formats them).
fn json(line: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *line, value);
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's `SystemTime` writes it.
fn timestamp(line: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != seconds {
            let formatted = i64::try_from(seconds)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default()
                .format("%Y-%m-%dT%H:%M:%S");
            second.1.clear();
            let _ = write!(second.1, "{formatted}");
            second.0 = seconds;
        }
        line.extend_from_slice(second.1.as_bytes());
    });
    let micros = since.subsec_micros();
    line.push(b'.');
    for shift in [100_000, 10_000, 1_000, 100, 10, 1] {
        line.push(b'0' + (micros / shift % 10) as u8);
    }
    line.push(b'Z');
}

/// An upstream status, or `-`.
struct OptionalStatus(Option<u16>);

impl std::fmt::Display for OptionalStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(status) => write!(f, "{status}"),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::access_sink::testing::Collected;
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    const LINE: AccessLine<'static> = AccessLine {
        service: "wnology.v1.MeService",
        method: "Get",
        code: "OK",
        latency: Duration::from_nanos(9_267),
        cache: "hit",
        upstream_status: None,
        request_id: "id \"quoted\" \\ é",
    };

    /// What tracing-subscriber's JSON formatter writes for the line's event (flattened, no
    /// span).
    fn formatted_by_tracing_subscriber(line: &AccessLine<'_>) -> Vec<u8> {
        let theirs = Collected::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(theirs.clone()),
        );
        tracing::subscriber::with_default(subscriber, || line.event(&tracing::Span::none()));
        theirs.0.lock().unwrap().clone()
    }

    /// The fields in order, the timestamp's value checked and left out.
    fn fields(bytes: &[u8]) -> Vec<(String, serde_json::Value)> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut fields: Vec<_> = value.as_object().unwrap().clone().into_iter().collect();
        for (name, value) in &mut fields {
            if name == "timestamp" {
                let text = value.as_str().unwrap();
                assert_eq!(text.len(), "2026-12-01T14:01:30.235316Z".len(), "{text}");
                assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "{text}");
                *value = serde_json::Value::Null;
            }
        }
        // serde_json's map sorts keys; the order of the text is checked apart.
        let mut order: Vec<_> = fields.iter().map(|(name, _)| name.clone()).collect();
        order.sort_by_key(|name| text.find(&format!("\"{name}\":")));
        fields.sort_by_key(|(name, _)| order.iter().position(|other| other == name));
        fields
    }

    #[test]
    fn lines_are_what_the_json_formatter_writes_for_the_event() {
        let answered = AccessLine {
            upstream_status: Some(200),
            cache: "miss",
            latency: Duration::from_micros(1_234_567),
            ..LINE
        };
        let failed = AccessLine {
            code: "UNAVAILABLE",
            cache: "-",
            upstream_status: Some(503),
            ..LINE
        };
        for line in [LINE, answered, failed] {
            let mut ours = Vec::new();
            line.write_json(&mut ours, SystemTime::now());
            let theirs = formatted_by_tracing_subscriber(&line);
            assert_eq!(fields(&ours), fields(&theirs), "{line:?}");
        }
        let mut ours = Vec::new();
        LINE.write_json(&mut ours, SystemTime::now());
        let names: Vec<_> = fields(&ours).into_iter().map(|(name, _)| name).collect();
        assert_eq!(
            names,
            [
                "timestamp",
                "level",
                "message",
                "rpc",
                "code",
                "latency_ms",
                "cache",
                "upstream_status",
                "request_id",
                "target"
            ]
        );
        let value: serde_json::Value = serde_json::from_slice(&ours).unwrap();
        assert_eq!(value["rpc"], "wnology.v1.MeService/Get");
        assert_eq!(value["latency_ms"], 0.009267);
        assert_eq!(value["upstream_status"], "-");
        assert_eq!(value["request_id"], "id \"quoted\" \\ é");
    }

    #[test]
    fn rust_log_decides_whether_access_lines_are_written() {
        let enabled = |directives: &str| access_enabled(EnvFilter::try_new(directives).unwrap());
        assert!(enabled("info"));
        assert!(enabled("debug"));
        assert!(enabled("wnology_gateway=info"));
        assert!(enabled("warn,wnology_gateway::access=info"));
        assert!(!enabled("warn"));
        assert!(!enabled("info,wnology_gateway::access=off"));
        assert!(!enabled("info,wnology_gateway=warn"));
    }

    #[test]
    fn timestamps_are_rfc3339_micros_in_utc() {
        let mut line = Vec::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_764_600_090_000_042);
        timestamp(&mut line, at);
        line.push(b' ');
        timestamp(&mut line, at + Duration::from_secs(1));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "2025-12-01T14:41:30.000042Z 2025-12-01T14:41:31.000042Z"
        );
    }
}
