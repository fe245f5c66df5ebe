#![forbid(unsafe_code)]

/// jemalloc, because the operator's memory is long-lived caches built up in bursts of work
/// (a wave of issuances, a restart's first list): glibc's allocator keeps the holes those bursts
/// leave between cached objects, and its per-thread arenas multiply them. Settings in
/// `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("the async runtime starts");
    let result = runtime.block_on(certpilot::cli::run(certpilot::cli::parse()));
    // Not waiting for blocking work a stop cut short (a key being generated, say): whatever
    // it was, it is redone at the next start, and a stop must not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
