//! Signal names as users type them: `TERM`, `SIGTERM`, `15`.
use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

pub fn parse(text: &str) -> Result<Signal> {
    let bad = || Error::InvalidSignal(text.to_string());
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// The conventional shell exit code of a process killed by `signal`.
pub fn exit_code(signal: Signal) -> i32 {
    128 + signal as i32
}
