//! The `crosscast` command.

fn main() -> std::process::ExitCode {
    crosscast::cli::main()
}
