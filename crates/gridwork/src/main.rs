//! `gridwork`: the node, the worker agent and the CLI in one binary.
//!
//! Thin by design: parse the command line, call a library, print, map the error to an exit
//! code (0 success, 1 failure, 2 usage).

#![deny(clippy::unwrap_used)]

#[cfg(feature = "bench")]
mod bench;
mod cli;
mod commands;
mod data;
#[cfg(feature = "bench")]
mod databench;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "demo")]
mod demo_service;
#[cfg(feature = "bench")]
mod execbench;
#[cfg(feature = "bench")]
mod hostilebench;
mod market;
mod output;
mod services;
mod worker;

use clap::Parser;

/// The data plane allocates and frees megabyte buffers per chunk; glibc's allocator returns
/// each to the kernel and faults it back in (a seventh of a pull's time in `perf`), mimalloc
/// keeps reusing them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let json = cli.json;
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            output::print_error(&err, json);
            std::process::ExitCode::from(1)
        }
    }
}
