//! Logging: human-readable or JSON lines, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let _ = registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let _ = registry.with(fmt::layer().with_target(false).with_ansi(ansi).with_writer(std::io::stderr)).try_init();
    }
}

/// Warnings and errors only (unless `RUST_LOG` says otherwise), as text: for commands whose
/// output is for a person at a terminal.
pub fn init_quiet() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,kube=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_target(false).with_ansi(ansi).with_writer(std::io::stderr))
        .try_init();
}
