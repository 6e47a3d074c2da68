use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    consolegate::cli::Cli::parse().run()
}
