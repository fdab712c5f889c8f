//! Where a command's output goes and where it runs: the one difference
//! between a command carried out by this process and one carried out by
//! `crosscast serve` for a client. The command's function is the same; the
//! server streams what it writes to the client, which prints it.

use std::io::{Read, Write};
use std::sync::Arc;

/// True once whoever a command runs for has gone (a client that hung up).
pub type Cancelled = Arc<dyn Fn() -> bool + Send + Sync>;

/// Who carries a command out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// This process, which owns the data directory for the command.
    Local,
    /// The server holding the data directory, for a client: the client's
    /// terminal is not the server's, and the process is not the command's.
    Served,
}

/// A command's standard streams, and where it runs.
pub struct Io {
    /// What the command prints.
    pub out: Box<dyn Write + Send>,
    /// Notes, warnings and errors.
    pub err: Box<dyn Write + Send>,
    /// What `--from-file -` reads.
    pub stdin: Box<dyn Read + Send>,
    /// Who carries it out.
    pub place: Place,
    /// Whether its client went away: a long command (an import) stops.
    pub cancelled: Cancelled,
}

impl Io {
    /// The process's own streams.
    pub fn process() -> Io {
        Io {
            out: Box::new(std::io::LineWriter::new(std::io::stdout())),
            err: Box::new(std::io::stderr()),
            stdin: Box::new(std::io::stdin()),
            place: Place::Local,
            // Ctrl-C is the interrupt handler's.
            cancelled: Arc::new(|| false),
        }
    }

    /// True when this process carries the command out itself (it may say
    /// what it is doing to the interrupt handler, show progress bars).
    pub fn local(&self) -> bool {
        self.place == Place::Local
    }

    /// Says what the command is doing, for Ctrl-C; the server's own
    /// handler ignores what one command does.
    pub fn doing(&self, what: crate::interrupt::Doing) {
        if self.local() {
            crate::interrupt::doing(what);
        }
    }
}

/// `writeln!` to the command's output, `?` included.
macro_rules! out {
    ($io:expr) => { writeln!($io.out)? };
    ($io:expr, $($arg:tt)*) => { writeln!($io.out, $($arg)*)? };
}

/// `writeln!` to the command's error stream, `?` included.
macro_rules! note {
    ($io:expr, $($arg:tt)*) => { writeln!($io.err, $($arg)*)? };
}

pub(crate) use {note, out};
