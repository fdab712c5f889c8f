//! The `crosscast` command.

fn main() -> std::process::ExitCode {
    // Behave like other Unix tools when the reader goes away
    // (`crosscast deliveries 1 | head`): exit quietly instead of panicking.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread
    // starts has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    crosscast::cli::main()
}
