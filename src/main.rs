#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    certpilot::cli::run(certpilot::cli::Cli::parse()).await
}
