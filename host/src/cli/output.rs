//! Standard output for commands. A reader that stops early
//! (`ionflow schema | head -c 50`) ends the command at once with exit code
//! 0, as Unix tools that die of SIGPIPE do, instead of the panic (exit 101)
//! that `println!` gives. Only the command's own output goes through here;
//! logs stay on stderr.

use std::io::Write as _;

/// Writes `text` to stdout and flushes it.
pub fn write(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // Nothing is left to say to a reader that has gone; whatever the
            // command still held is released by the OS (file locks included).
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(super::Exit::Failure as i32);
    }
}

/// `println!` for command output: see the module.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::write(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for command output: see the module.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(&format!($($arg)*))
    };
}

pub(crate) use {out, outln};
