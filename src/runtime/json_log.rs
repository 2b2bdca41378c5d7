//! One `tracing` event as one JSON line: `{"time":..,"level":..,"target":..,"message":..,
//! <fields>}`. The Workers console logger writes these (so `wrangler tail` and Workers Logs get
//! what the native server writes to stderr, as structured fields); the rendering lives here,
//! free of JS, so it is tested natively.
//!
//! A line is a JSON object: it starts with `{` whatever a field holds, and a line break or an
//! escape sequence in a value is escaped, so attacker text can neither start a line nor forge
//! one. `?` (Debug) values of strings lose their outer quotes but keep Rust's escapes.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};

/// Collects an event's fields.
struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        // Fields cannot overwrite the line's own keys.
        let name = match field.name() {
            name @ ("time" | "level" | "target") => format!("field.{name}"),
            name => name.to_owned(),
        };
        self.0.insert(name, value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // `?"text"` is Debug of a string: quoted and escaped. The quotes go; the escapes stay.
        let text = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) if field.name() != "message" => inner.to_owned(),
            _ => text,
        };
        self.put(field, Value::String(text));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
}

/// `event` as one JSON line (no trailing newline), stamped with `time` when given.
pub(crate) fn render(event: &tracing::Event<'_>, time: Option<String>) -> String {
    let meta = event.metadata();
    let mut line = Map::new();
    if let Some(time) = time {
        line.insert("time".into(), Value::String(time));
    }
    line.insert("level".into(), Value::String(meta.level().as_str().to_owned()));
    line.insert("target".into(), Value::String(meta.target().to_owned()));
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    line.extend(fields.0);
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::render;

    /// A layer that renders like the console logger, into a vector.
    struct Lines(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Lines {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(render(event, Some("2026-12-05T17:00:00.000Z".into())));
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Lines(lines.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .map(|l| {
                assert!(l.starts_with('{') && !l.contains('\n') && !l.contains('\u{1b}'), "{l:?}");
                serde_json::from_str(l).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_decision_becomes_one_json_object_with_typed_fields() {
        let lines = capture(|| {
            tracing::info!(layer = "identity", outcome = "refused", code = "token_expired", status = 401u16, cached = false, reason = ?"token has expired".to_string(), "decision");
        });
        assert_eq!(
            lines,
            [serde_json::json!({
                "time": "2026-12-05T17:00:00.000Z", "level": "INFO", "target": module_path!(),
                "message": "decision", "layer": "identity", "outcome": "refused", "code": "token_expired",
                "status": 401, "cached": false, "reason": "token has expired",
            })]
        );
    }

    #[test]
    fn log_injection_attack_text_cannot_start_or_forge_a_line() {
        let path = "/x\n{\"level\":\"ERROR\",\"message\":\"forged\"}\u{1b}[2J";
        let lines = capture(|| {
            tracing::warn!(path = ?path, raw = path, time = "spoofed", "no policy");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["time"], "2026-12-05T17:00:00.000Z");
        assert_eq!(lines[0]["field.time"], "spoofed");
        assert_eq!(lines[0]["raw"], path, "a str field keeps its text, escaped by JSON");
        assert!(lines[0]["path"].as_str().unwrap().contains("\\n{\\\"level"), "{}", lines[0]["path"]);
    }
}
