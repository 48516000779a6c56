//! The access log: one line per RPC (events of target [`ACCESS_TARGET`]), every field kept,
//! written off the request path by [`AccessSink`](super::access_sink::AccessSink).
//!
//! In JSON the line is formatted here rather than by tracing-subscriber's JSON formatter: the
//! shape is the same as every other JSON line (`timestamp`, `level`, the event's fields in
//! order, `target`; strings and numbers written by serde_json), but it is built in one reused
//! buffer, with the date part of the timestamp formatted once a second, because at cache-hit
//! rates the general formatter cost a tenth of the RPC.

use std::{
    cell::RefCell,
    fmt::{self, Write as _},
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    layer::{Context, Layer},
    registry::LookupSpan,
};

use super::access_sink::{AccessSink, DroppedLines};

/// The target of the access log: one line per RPC.
pub const ACCESS_TARGET: &str = "wnology_gateway::access";

/// Access-log lines held in memory while the sink is slow; beyond that they are dropped and
/// counted (`wnology_gateway_access_log_dropped_total`).
pub const ACCESS_LOG_BUFFER_LINES: usize = 64 * 1024;

/// Counts the access-log lines dropped because the sink did not keep up.
static DROPPED: OnceLock<DroppedLines> = OnceLock::new();

/// Access-log lines dropped so far because the log sink (stdout) did not keep up.
pub fn access_log_dropped() -> u64 {
    DROPPED.get().map_or(0, DroppedLines::get)
}

/// Makes `dropped` the counter [`access_log_dropped`] reads (the first access log installed).
pub(super) fn count_drops(dropped: DroppedLines) {
    let _ = DROPPED.set(dropped);
}

/// Writes access events as JSON lines into the sink.
#[derive(Debug)]
pub(super) struct JsonAccessLayer {
    sink: AccessSink,
}

impl JsonAccessLayer {
    pub(super) fn new(sink: AccessSink) -> JsonAccessLayer {
        JsonAccessLayer { sink }
    }
}

thread_local! {
    /// The line being built, and scratch space for `Debug`/`Display` values.
    static BUFFERS: RefCell<(Vec<u8>, String)> = const { RefCell::new((Vec::new(), String::new())) };
    /// The formatted date and time of the last whole second seen on this thread.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl<S> Layer<S> for JsonAccessLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        BUFFERS.with(|buffers| {
            let Ok(mut buffers) = buffers.try_borrow_mut() else {
                return; // an event logged while formatting this one: nothing to add
            };
            let (line, scratch) = &mut *buffers;
            line.clear();
            format_line(line, scratch, event);
            self.sink.append(line);
        });
    }
}

/// `{"timestamp":…,"level":…,<fields>,"target":…}` and a newline.
fn format_line(line: &mut Vec<u8>, scratch: &mut String, event: &Event<'_>) {
    line.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(line, SystemTime::now());
    line.extend_from_slice(b"\",\"level\":\"");
    line.extend_from_slice(event.metadata().level().as_str().as_bytes());
    line.push(b'"');
    event.record(&mut Fields { line, scratch });
    line.extend_from_slice(b",\"target\":");
    json_string(line, event.metadata().target());
    line.extend_from_slice(b"}\n");
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

/// A JSON string, escaped as serde_json escapes it.
fn json_string(line: &mut Vec<u8>, text: &str) {
    // Writing a &str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *line, text);
}

/// Writes each field as `,"name":value`.
struct Fields<'a> {
    line: &'a mut Vec<u8>,
    scratch: &'a mut String,
}

impl Fields<'_> {
    fn name(&mut self, field: &Field) {
        self.line.push(b',');
        json_string(self.line, field.name());
        self.line.push(b':');
    }

    fn number(&mut self, field: &Field, value: impl serde::Serialize) {
        self.name(field);
        let _ = serde_json::to_writer(&mut *self.line, &value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        json_string(self.line, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.number(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        self.name(field);
        json_string(self.line, self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::super::access_sink::testing::Collected;
    use super::*;
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    fn log_one_access_line() {
        tracing::info!(
            target: "wnology_gateway::access",
            rpc = %"wnology.v1.MeService/Get",
            code = "OK",
            latency_ms = 0.009267,
            cache = "hit",
            upstream_status = %"-",
            request_id = %"id \"quoted\" \\ é",
            count = 3u64,
            "rpc",
        );
    }

    /// The line is what tracing-subscriber's JSON formatter writes for the same event
    /// (flattened, no span), but for the timestamp's value.
    #[test]
    fn lines_have_the_shape_of_the_json_formatter() {
        let ours = Collected::default();
        let (our_sink, _, our_guard) = AccessSink::start(ours.clone(), 16).unwrap();
        let theirs = Collected::default();
        let subscriber = tracing_subscriber::registry()
            .with(JsonAccessLayer::new(our_sink))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(theirs.clone()),
            );
        tracing::subscriber::with_default(subscriber, log_one_access_line);
        drop(our_guard);
        let parse = |bytes: &[u8]| -> Vec<(String, serde_json::Value)> {
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
            fields
        };
        let ours = ours.0.lock().unwrap().clone();
        let theirs = theirs.0.lock().unwrap().clone();
        assert_eq!(parse(&ours), parse(&theirs));
        // In the same order, too.
        let order = |bytes: &[u8]| {
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            let mut keys = [
                "timestamp",
                "level",
                "message",
                "rpc",
                "code",
                "latency_ms",
                "cache",
            ];
            keys.sort_by_key(|key| text.find(&format!("\"{key}\":")));
            keys
        };
        assert_eq!(order(&ours), order(&theirs));
        assert_eq!(order(&ours)[..3], ["timestamp", "level", "message"]);
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
