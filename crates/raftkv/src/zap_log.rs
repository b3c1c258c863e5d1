//! `--logger zap`: log lines as etcd 3.4 writes them with its zap logger, one JSON
//! object a line, so the log pipelines and queries operators built for etcd read raftkv's
//! too:
//!
//! ```text
//! {"level":"info","ts":"2026-12-04T05:31:43.460Z","caller":"server/src/lib.rs:214","msg":"serving client requests","address":"127.0.0.1:2379"}
//! ```
//!
//! The keys come in etcd's order (`level`, `ts`, `caller`, `msg`, then the event's own
//! fields in the order it wrote them). `level` is lower case (`debug`, `info`, `warn`,
//! `error`; a trace event is `debug`, as zap has no lower level); `ts` is UTC with
//! milliseconds, as etcd's ISO 8601 encoder writes it; `caller` is the source file from
//! its crate's directory on (`server/src/lib.rs:214`, as zap's short caller writes
//! `embed/etcd.go:117`). A field's name has `_` written as `-` (etcd's keys are
//! `member-id`, `cluster-id`); integers and booleans are JSON numbers and booleans,
//! floats numbers unless not finite (then a string), and everything else a string —
//! a field recorded with `?` (its `Debug` form) is that form as a string, so a list is
//! `"[\"a\", \"b\"]"` where etcd writes a JSON array. Spans' fields are not written
//! (raftkv's events carry what they need themselves).
//!
//! The two lines a member can write without its logger stay plain text: the panic
//! hook's `fatal: …` and the `error: …` a failed start ends with.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The [`FormatEvent`] of `--logger zap` (see the module docs).
#[derive(Debug, Default)]
pub struct ZapFormat;

impl<S, N> FormatEvent<S, N> for ZapFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let line = zap_line(
            *meta.level(),
            &ts,
            meta.file().map(|f| (f, meta.line().unwrap_or(0))),
            &fields.message,
            &fields.rest,
        );
        writer.write_str(&line)
    }
}

/// One log line (with its newline) from its parts: `ts` as tracing-subscriber's
/// [`SystemTime`] writes it (RFC 3339, microseconds), `fields` the event's other fields
/// already written as `,"key":value` pairs.
fn zap_line(
    level: Level,
    ts: &str,
    caller: Option<(&str, u32)>,
    msg: &str,
    fields: &str,
) -> String {
    let level = match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    };
    let mut line = String::with_capacity(96 + msg.len() + fields.len());
    line.push_str("{\"level\":\"");
    line.push_str(level);
    line.push_str("\",\"ts\":");
    push_json_str(&mut line, &millis(ts));
    if let Some((file, number)) = caller {
        line.push_str(",\"caller\":");
        push_json_str(&mut line, &format!("{}:{number}", short_caller(file)));
    }
    line.push_str(",\"msg\":");
    push_json_str(&mut line, msg);
    line.push_str(fields);
    line.push_str("}\n");
    line
}

/// `2026-12-04T05:31:43.460123Z` → `2026-12-04T05:31:43.460Z` (etcd's precision); a
/// time in any other shape is kept as it is.
fn millis(ts: &str) -> String {
    match ts.split_once('.') {
        Some((seconds, fraction))
            if fraction.len() > 4 && fraction[..3].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{seconds}.{}Z", &fraction[..3])
        }
        _ => ts.to_string(),
    }
}

/// The source file from its crate's directory on: `crates/server/src/lib.rs` →
/// `server/src/lib.rs`, `/…/registry/src/…/h2-0.4.5/src/proto/mod.rs` →
/// `h2-0.4.5/src/proto/mod.rs`; a path without a `src` directory is kept whole.
fn short_caller(file: &str) -> &str {
    match file.rfind("/src/").map(|src| file[..src].rfind('/')) {
        Some(Some(slash)) => &file[slash + 1..],
        _ => file,
    }
}

/// Appends `s` as a JSON string, quotes included.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An event's fields: its message apart, the others as `,"key":value` in the order
/// they were recorded.
#[derive(Default)]
struct JsonFields {
    message: String,
    rest: String,
}

impl JsonFields {
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        push_json_str(&mut self.rest, &field.name().replace('_', "-"));
        self.rest.push(':');
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.key(field);
            push_json_str(&mut self.rest, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.key(field);
            let _ = write!(self.rest, "{value}");
        } else {
            self.record_str(field, &value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_etcds_keys_in_etcds_order() {
        let line = zap_line(
            Level::INFO,
            "2026-12-04T05:31:43.460123Z",
            Some(("crates/server/src/lib.rs", 214)),
            "serving client requests",
            ",\"address\":\"127.0.0.1:2379\",\"members\":3",
        );
        assert_eq!(
            line,
            "{\"level\":\"info\",\"ts\":\"2026-12-04T05:31:43.460Z\",\
             \"caller\":\"server/src/lib.rs:214\",\"msg\":\"serving client requests\",\
             \"address\":\"127.0.0.1:2379\",\"members\":3}\n"
        );
        let trace = zap_line(Level::TRACE, "x", None, "m", "");
        assert_eq!(trace, "{\"level\":\"debug\",\"ts\":\"x\",\"msg\":\"m\"}\n");
        assert!(zap_line(Level::WARN, "x", None, "m", "").starts_with("{\"level\":\"warn\""));
        assert!(zap_line(Level::ERROR, "x", None, "m", "").starts_with("{\"level\":\"error\""));
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        push_json_str(&mut out, "a \"quoted\" \\ path\nnext\tcol\u{1}é");
        assert_eq!(out, "\"a \\\"quoted\\\" \\\\ path\\nnext\\tcol\\u0001é\"");
    }

    #[test]
    fn the_caller_starts_at_the_crate_directory() {
        assert_eq!(short_caller("crates/server/src/lib.rs"), "server/src/lib.rs");
        assert_eq!(
            short_caller("/root/.cargo/registry/src/index-1/h2-0.4.5/src/proto/mod.rs"),
            "h2-0.4.5/src/proto/mod.rs"
        );
        assert_eq!(short_caller("src/main.rs"), "src/main.rs");
        assert_eq!(short_caller("build.rs"), "build.rs");
        assert_eq!(millis("2026-12-04T05:31:43.460123Z"), "2026-12-04T05:31:43.460Z");
        assert_eq!(millis("<unknown time>"), "<unknown time>");
    }

    /// Through a real subscriber: field types, names and the message's place.
    #[test]
    fn events_become_one_json_object_a_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(ZapFormat)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let list = vec!["http://a:2379", "http://b:2379"];
            tracing::info!(member_id = "8e9e05c52164694d", term = 3u64, delta = -2i64, ok = true,
                ratio = 0.5, bad = f64::NAN, urls = ?list, "member \"x\" started");
            tracing::warn!("no fields");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = lines[0];
        assert!(first.starts_with("{\"level\":\"info\",\"ts\":\""), "{first}");
        assert!(first.contains("\"caller\":\"raftkv/src/zap_log.rs:"), "{first}");
        let rest = first.split_once(",\"msg\":").unwrap().1;
        assert_eq!(
            rest,
            "\"member \\\"x\\\" started\",\"member-id\":\"8e9e05c52164694d\",\"term\":3,\
             \"delta\":-2,\"ok\":true,\"ratio\":0.5,\"bad\":\"NaN\",\
             \"urls\":\"[\\\"http://a:2379\\\", \\\"http://b:2379\\\"]\"}"
        );
        let ts = first.split("\"ts\":\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(ts.len(), "2026-12-04T05:31:43.460Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert!(
            lines[1].starts_with("{\"level\":\"warn\"")
                && lines[1].ends_with("\"msg\":\"no fields\"}")
        );
    }
}
