//! The `crosscast` command.

/// mimalloc: a send allocates and frees many small buffers across threads
/// (requests, answers, log entries), where glibc's allocator spent ~1/5 of
/// the delivery's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // mimalloc asks for transparent huge pages on its arenas, and the
    // kernel then zeroes 2 MiB at a time as the heap grows: peak memory of a
    // 20,000-message delivery was 145 MB with them and 90 MB without, at
    // the same speed (BENCHMARKS.md).
    // SAFETY: prctl with integer arguments only sets a flag of this process.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // Everything the process creates is its owner's alone (the data
    // directory's files 0600, its directories 0700): secrets live there.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    // Behave like other Unix tools when the reader goes away
    // (`crosscast deliveries 1 | head`): exit quietly instead of printing a
    // panic. SIGPIPE itself stays ignored (Rust's default): restoring its
    // default action would also kill the process when a provider closes a
    // socket the host is writing to.
    // `println!` panics when its write fails; the pipe's state, not the
    // panic's text, says whether its reader went away.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if stdout_reader_gone() {
            std::process::exit(141);
        }
        default(info);
    }));
    crosscast::cli::main()
}

/// True if standard output is a pipe or socket whose reader is gone: the
/// kernel reports an error condition on it (`POLLERR`, or `POLLHUP` for a
/// socket).
fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
