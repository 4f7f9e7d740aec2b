//! A progress line on stderr for long work (snapshot save, make-mirror, check perf), drawn only
//! when stderr is a terminal so that pipes and logs get the command's output alone.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Progress {
    on: bool,
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress { on: std::io::stderr().is_terminal(), start: Instant::now() }
    }

    /// Redraws the line; `line` (given the time since the start) runs only when it is drawn.
    pub fn show(&self, line: impl FnOnce(Duration) -> String) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\x1b[K", line(self.start.elapsed()));
            let _ = err.flush();
        }
    }

    /// Ends the line, leaving its last state on the terminal.
    pub fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}
