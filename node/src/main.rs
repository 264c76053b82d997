//! The `conclave` binary: start a node (bootstrapping or joining a cluster), show cluster
//! status, remove a node.

mod cli;
mod config;
mod identity;
mod node;
mod peer_service;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    if cli.is_server() {
        // A panicking task must not leave a half-alive node: print the panic, then abort.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default_hook(info);
            std::process::abort();
        }));
    } else {
        // A client command piped into `head` ends quietly, like other command-line tools.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    conclave_raft::storage::disable_perf_counters();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .on_thread_start(conclave_raft::storage::disable_perf_counters)
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(cli))
}
