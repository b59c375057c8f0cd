//! Daemons' logging setup, with a filter that the admin server's `/logging`
//! can change while they run (e.g. `debug` for one pod's trouble, then
//! back). ztunnel and the control plane share it.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// The running filter.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// The filter in effect, in `RUST_LOG` syntax.
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }

    /// Replaces the filter; an invalid one is refused and changes nothing.
    pub fn set(&self, directives: &str) -> Result<String, String> {
        let filter = EnvFilter::try_new(directives)
            .map_err(|err| format!("invalid log filter {directives:?}: {err}"))?;
        self.handle
            .reload(filter)
            .map_err(|err| format!("cannot change the log filter: {err}"))?;
        Ok(self.current())
    }
}

/// Logs to stderr, as text (colours only on a terminal) or JSON lines;
/// the filter starts from `RUST_LOG`, default `info`.
pub fn init(json: bool) -> LogControl {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let format = if json {
        format.json().boxed()
    } else {
        format.boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .init();
    LogControl { handle }
}
