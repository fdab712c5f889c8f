//! Ctrl-C (SIGINT) and SIGTERM: the command says what it is doing, and an
//! interrupt ends it in a state it can name. Everything a run does is
//! written before the next step (a killed process resumes where it was),
//! so a run or the worker stops at once and says how to resume; an import
//! stops having stored nothing (it takes effect only once it has read its
//! whole file). The process then exits with 130.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the command is doing, as an interrupt needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// Nothing an interrupt could leave half-done.
    Other,
    /// Driving a run (its number once known).
    Run(Option<u64>),
    /// The worker's loop.
    Worker,
    /// An import: nothing takes effect before it has read its whole file.
    Importing,
    /// A command a server carries out for this process.
    Forwarded,
    /// `crosscast serve`: the first interrupt asks it to stop gracefully
    /// (it watches [`requested`]); a second one ends it at once.
    Serving,
}

static DOING: Mutex<Doing> = Mutex::new(Doing::Other);
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Makes what was written durable before the process exits.
static FLUSH: Mutex<Option<Box<dyn Fn() + Send>>> = Mutex::new(None);

/// Runs `flush` before an interrupt ends the process (flush the store),
/// until the guard returned is dropped.
#[must_use = "the flush is forgotten when the guard is dropped"]
pub fn before_exit(flush: impl Fn() + Send + 'static) -> Flushing {
    *FLUSH.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(flush));
    Flushing
}

/// Keeps a flush registered with [`before_exit`]: what it holds (a store)
/// is let go when this is dropped.
pub struct Flushing;

impl Drop for Flushing {
    fn drop(&mut self) {
        *FLUSH.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Exit code of an interrupted command.
pub const EXIT: u8 = 130;

/// Says what the command is doing from now on.
pub fn doing(what: Doing) {
    let mut doing = DOING.lock().unwrap_or_else(|p| p.into_inner());
    // A server stays a server whatever one of its commands says it does
    // (an import it carries out): an interrupt stops all of it gracefully.
    if *doing != Doing::Serving {
        *doing = what;
    }
}

/// True once an interrupt came that the command must act on (an import).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Handles SIGINT and SIGTERM on a thread of their own from now on.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            for _ in signals.forever() {
                on_interrupt();
            }
        })?;
    Ok(())
}

fn on_interrupt() {
    let doing = *DOING.lock().unwrap_or_else(|p| p.into_inner());
    let again = REQUESTED.swap(true, Ordering::SeqCst);
    let stop = |message: &str| -> ! {
        if let Some(flush) = FLUSH.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            flush();
        }
        eprintln!("interrupted: {message}");
        std::process::exit(EXIT.into());
    };
    match doing {
        // The import notices, stops and says it stored nothing.
        Doing::Importing => {}
        Doing::Forwarded => stop(
            "the server carries on with what the command started (a run goes on; an import \
             stops, having stored nothing)",
        ),
        Doing::Serving if !again => {}
        Doing::Serving => stop(
            "a second interrupt: the server stopped at once; every step it took is stored, \
             messages on the wire are left as intents, and the next start resumes where it was",
        ),
        Doing::Run(Some(run)) => stop(&format!(
            "run {run} stopped where it was: every step it took is stored, and `crosscast \
             worker` resumes it (`crosscast status {run}` shows it)"
        )),
        Doing::Run(None) => stop("no run was started"),
        Doing::Worker => stop(
            "the worker stopped; every step it took is stored, and the next worker resumes \
             where it was",
        ),
        Doing::Other => stop("stopped"),
    }
}
