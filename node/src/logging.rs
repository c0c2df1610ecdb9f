//! Log output: tracing to stderr, human-readable or JSON lines, behind a filter that
//! can be changed while the node runs (`chorus ctl log-level`).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// Why the log filter could not be changed. The filter in force is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// The text is not a tracing filter.
    #[error("not a log filter: {0}")]
    Invalid(String),
    /// The subscriber this handle belongs to is gone (or was never installed).
    #[error("the log filter cannot be changed: {0}")]
    Unavailable(String),
}

/// Changes the installed log filter at runtime; cheap to clone.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// The filter in force, as text (e.g. `info` or `chorus_node=debug,info`).
    pub fn current(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }

    /// Checks `filter` without applying it.
    pub fn parse(filter: &str) -> Result<EnvFilter, LogLevelError> {
        EnvFilter::try_new(filter).map_err(|e| LogLevelError::Invalid(e.to_string()))
    }

    /// Replaces the filter; returns the one it replaced.
    pub fn set(&self, filter: EnvFilter) -> Result<String, LogLevelError> {
        let previous = self.current();
        self.handle
            .reload(filter)
            .map_err(|e| LogLevelError::Unavailable(e.to_string()))?;
        Ok(previous)
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`. Returns the
/// handle that changes the filter later.
pub fn init(format: LogFormat, level: &str) -> LogControl {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // The filter is the first layer on the registry so that its reload handle has a
    // nameable type; the format layer sits on top.
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    // Colour codes only for a terminal: in a pipe or a journal they are noise.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests, or a command that runs twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    LogControl { handle }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_before_anything_changes() {
        assert!(matches!(
            LogControl::parse("[[["),
            Err(LogLevelError::Invalid(_))
        ));
        assert!(LogControl::parse("chorus_node=debug,info").is_ok());
    }

    #[test]
    fn set_reports_the_previous_filter() {
        let (_layer, handle) = reload::Layer::<EnvFilter, Registry>::new(EnvFilter::new("info"));
        let control = LogControl { handle };
        assert_eq!(control.current(), "info");
        let previous = control.set(LogControl::parse("debug").unwrap()).unwrap();
        assert_eq!(previous, "info");
        assert_eq!(control.current(), "debug");
    }
}
