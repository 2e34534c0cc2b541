//! The `keyledger` binary: parses the command line and runs it.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Small JSON values are allocated and freed by the million (a rebuild, every request):
/// mimalloc does it for about half of glibc malloc's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = keyledger_api::cli::Cli::parse();
    match keyledger_api::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyledger: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
