#![forbid(unsafe_code)]

/// jemalloc, because the operator's memory is long-lived caches built up in bursts of work
/// (a wave of issuances, a restart's first list): glibc's allocator keeps the holes those bursts
/// leave between cached objects, and its per-thread arenas multiply them. Settings in
/// `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    certpilot::cli::run(certpilot::cli::parse()).await
}
