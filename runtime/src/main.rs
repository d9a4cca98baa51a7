use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOC: sluice::alloc::LazyHugeAlloc = sluice::alloc::LazyHugeAlloc;

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    match sluice::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
