//! Interface counters of a network namespace, read without forking the daemon.
//!
//! A pod's network namespace is pinned as an nsfs bind mount (see [`crate::sandbox`]).
//! The kernel shows the counters of the *reading thread's* network namespace in
//! `/proc/thread-self/net/dev`, so a short-lived thread of our own joins the namespace with
//! `setns`, reads that file and ends. Only that thread ever changes namespace; the daemon's
//! other threads (tokio's among them) never notice. Joining a network namespace is allowed
//! in a multi-threaded process, unlike joining a mount or user namespace.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// The counters the kernel keeps for one network interface, since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetStatsError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("joining network namespace {path}: {source}")]
    Join {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("reading {NET_DEV}: {0}")]
    Read(#[source] io::Error),
    #[error("unexpected line in {NET_DEV}: {0:?}")]
    Parse(String),
    #[error("starting the namespace reader thread: {0}")]
    Spawn(#[source] io::Error),
    #[error("the namespace reader thread panicked")]
    ThreadPanicked,
}

/// The calling thread's view of the interfaces of its network namespace.
const NET_DEV: &str = "/proc/thread-self/net/dev";

/// Every interface of the network namespace pinned at `netns` (an nsfs file such as
/// `/run/peapod/pods/<id>/ns/net`), in the kernel's order. Blocks briefly: call it from a
/// blocking thread.
pub fn read_netns(netns: &Path) -> Result<Vec<InterfaceCounters>, NetStatsError> {
    // Opened here, so a missing namespace is reported without starting a thread.
    let ns = File::open(netns).map_err(|source| NetStatsError::Open {
        path: netns.to_path_buf(),
        source,
    })?;
    let path = netns.to_path_buf();
    let reader = std::thread::Builder::new()
        .name("netns-stats".into())
        .spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetStatsError::Join { path, source })?;
            let text = std::fs::read_to_string(NET_DEV).map_err(NetStatsError::Read)?;
            parse_net_dev(&text)
        })
        .map_err(NetStatsError::Spawn)?;
    reader.join().map_err(|_| NetStatsError::ThreadPanicked)?
}

/// Parses the text of `/proc/net/dev`: two header lines, then one line per interface,
/// `name: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed multicast tx_bytes
/// tx_packets tx_errs tx_drop fifo colls carrier compressed`.
pub fn parse_net_dev(text: &str) -> Result<Vec<InterfaceCounters>, NetStatsError> {
    text.lines()
        .skip(2)
        .filter(|line| !line.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<InterfaceCounters, NetStatsError> {
    let bad = || NetStatsError::Parse(line.to_string());
    // No space is needed after the colon once the counters grow wide, so split on it.
    let (name, counters) = line.split_once(':').ok_or_else(bad)?;
    let fields = counters
        .split_whitespace()
        .map(|f| f.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<Vec<u64>, _>>()?;
    if fields.len() < 16 {
        return Err(bad());
    }
    Ok(InterfaceCounters {
        name: name.trim().to_string(),
        rx_bytes: fields[0],
        rx_packets: fields[1],
        rx_errors: fields[2],
        rx_dropped: fields[3],
        tx_bytes: fields[8],
        tx_packets: fields[9],
        tx_errors: fields[10],
        tx_dropped: fields[11],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:12345678901  16    1    2    0     0          0         0      796      10    3    4    0     0       0          0
";

    #[test]
    fn parses_every_interface() {
        let interfaces = parse_net_dev(SAMPLE).unwrap();
        assert_eq!(interfaces.len(), 2);
        assert_eq!(interfaces[0].name, "lo");
        assert_eq!(
            interfaces[1],
            InterfaceCounters {
                name: "eth0".into(),
                rx_bytes: 12_345_678_901,
                rx_packets: 16,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 796,
                tx_packets: 10,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
    }

    #[test]
    fn rejects_a_short_line() {
        let text = "h1\nh2\n  eth0: 1 2 3\n";
        assert!(matches!(parse_net_dev(text), Err(NetStatsError::Parse(_))));
    }

    #[test]
    fn reads_the_callers_own_namespace() {
        // Our own namespace always has a loopback interface.
        let interfaces = read_netns(Path::new("/proc/self/ns/net")).unwrap();
        assert!(interfaces.iter().any(|i| i.name == "lo"), "{interfaces:?}");
    }

    #[test]
    fn a_missing_namespace_is_an_open_error() {
        let err = read_netns(Path::new("/nonexistent/ns/net")).unwrap_err();
        assert!(matches!(err, NetStatsError::Open { .. }), "{err}");
    }
}
