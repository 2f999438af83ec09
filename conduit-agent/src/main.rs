use std::process::ExitCode;

fn main() -> ExitCode {
    conduit_agent::cli::main()
}
