//! `harness`: run phases against the reference cluster and report (see `harness --help`).

use std::process::ExitCode;

fn main() -> ExitCode {
    harness::cli::main()
}
