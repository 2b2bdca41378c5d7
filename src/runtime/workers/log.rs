//! The Workers console logger: each `tracing` event as one JSON line on `console.log` (INFO and
//! below), `console.warn` (WARN) or `console.error` (ERROR), so the gate's decisions reach
//! `wrangler tail` and Workers Logs as structured fields, the way the native server's reach
//! stderr. Spans are not recorded (ztgate emits events only).

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::runtime::json_log::render;

/// A [`tracing_subscriber::Layer`] writing JSON lines to the JS console, at `max_level` and
/// more severe. Compose it with other layers, or call [`ConsoleLog::install`].
///
/// ```ignore
/// #[event(start)]
/// fn start() {
///     ztgate::workers::ConsoleLog::install(tracing::Level::INFO);
/// }
/// ```
/// A decision then reads, in `wrangler tail`:
/// `{"time":"2026-12-05T17:00:00.000Z","level":"INFO","target":"ztgate::gate::pipeline",
/// "message":"..","layer":"identity","outcome":"refused","code":"token_expired",..}`.
/// Tokens, cookies and secrets are never fields of ztgate's events.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleLog {
    max_level: Level,
}

impl ConsoleLog {
    /// Events at `max_level` or more severe (`Level::INFO` logs decisions; `Level::WARN` only
    /// misconfigurations and failures of the key fetch).
    pub fn new(max_level: Level) -> Self {
        Self { max_level }
    }

    /// Installs this layer on a registry as the global subscriber. `false` if one was
    /// installed already (by an earlier call, or by the application): that one stays.
    pub fn install(max_level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(Self::new(max_level));
        tracing::subscriber::set_global_default(subscriber).is_ok()
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for ConsoleLog {
    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let time = js_sys::Date::new_0().to_iso_string().as_string();
        let line = wasm_bindgen::JsValue::from_str(&render(event, time));
        match *event.metadata().level() {
            Level::ERROR => web_sys::console::error_1(&line),
            Level::WARN => web_sys::console::warn_1(&line),
            _ => web_sys::console::log_1(&line),
        }
    }
}
