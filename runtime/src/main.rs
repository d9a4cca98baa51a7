use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fn main() -> ExitCode {
    sluice::alloc::tune_system_allocator();
    let cli = sluice::cli::Cli::parse();
    if !matches!(
        cli.command,
        sluice::cli::Command::Serve(_) | sluice::cli::Command::Worker(_)
    ) {
        // Client commands behave like other Unix tools when their output pipe closes
        // (`sluice consume t | head`): they end quietly. The broker keeps ignoring SIGPIPE,
        // which Rust sets up, so a client hanging up can never kill it.
        // SAFETY: setting a signal disposition to its default has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match sluice::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
