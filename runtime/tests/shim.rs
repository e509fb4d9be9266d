//! `peapod-shim` end to end (run as root): a real container in a busybox bundle, driven over the
//! shim's control socket the way peapodd drives it. Every test has its own id, state root and
//! temporary directory, so they run in parallel; the container and the shim are removed when the
//! test ends, pass or fail.
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use peapod_runtime::cgroups::Cgroup;
use peapod_runtime::crilog::{self, Stream, Tag};
use peapod_runtime::shim_protocol::frame::{self, Kind};
use peapod_runtime::shim_protocol::{ExitInfo, Response};
use peapod_runtime::state::process_start_time;
use peapod_runtime::Container;
use peapod_tests::{unique, Bundle};
use serde_json::{json, Value};

/// A generous bound for things that happen "soon": tests poll, they never sleep-then-assert.
const PATIENCE: Duration = Duration::from_secs(60);

/// A launched shim and everything it owns, removed on drop.
struct Shim {
    id: String,
    pid: i32,
    dir: tempfile::TempDir,
    _bundle: Bundle,
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    (
        dir.join("root"),
        dir.join("shim.sock"),
        dir.join("logs/container.log"),
        dir.join("exit.json"),
    )
}

/// Run the launcher; returns its output once it has exited.
fn launch_raw(id: &str, bundle: &Bundle, dir: &Path, extra: &[&str]) -> std::process::Output {
    let (root, socket, log, exit) = paths(dir);
    Command::new(env!("CARGO_BIN_EXE_peapod-shim"))
        .args(["--id", id, "--debug"])
        .arg("--bundle")
        .arg(bundle.path())
        .arg("--root")
        .arg(&root)
        .arg("--socket")
        .arg(&socket)
        .arg("--log-path")
        .arg(&log)
        .arg("--exit-file")
        .arg(&exit)
        .args(extra)
        .output()
        .expect("running peapod-shim")
}

impl Shim {
    fn launch(args: &[&str], extra: &[&str]) -> Shim {
        let bundle = Bundle::new(args);
        bundle.write();
        Shim::launch_bundle(bundle, extra)
    }

    fn launch_bundle(bundle: Bundle, extra: &[&str]) -> Shim {
        let id = unique("shim");
        let dir = tempfile::Builder::new()
            .prefix("peapod-shim-test-")
            .tempdir()
            .unwrap();
        let out = launch_raw(&id, &bundle, dir.path(), extra);
        assert!(
            out.status.success(),
            "launcher failed: {}\nshim log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.path().join("shim.log")).unwrap_or_default()
        );
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the launcher prints the shim's pid");
        Shim {
            id,
            pid,
            dir,
            _bundle: bundle,
        }
    }

    fn root(&self) -> PathBuf {
        paths(self.dir.path()).0
    }

    fn socket(&self) -> PathBuf {
        paths(self.dir.path()).1
    }

    fn log(&self) -> PathBuf {
        paths(self.dir.path()).2
    }

    fn exit_file(&self) -> PathBuf {
        paths(self.dir.path()).3
    }

    fn connect(&self) -> Conn {
        Conn::new(UnixStream::connect(self.socket()).expect("connecting to the shim"))
    }

    /// One request on a connection of its own.
    fn request(&self, request: Value) -> Response {
        self.connect().request(request)
    }

    fn ok(&self, request: Value) -> Response {
        let response = self.request(request.clone());
        assert!(response.ok, "{request} failed: {:?}", response.error);
        response
    }

    fn wait(&self) -> ExitInfo {
        self.ok(json!({"op": "wait"}))
            .exit
            .expect("wait answers with the exit")
    }

    fn alive(&self) -> bool {
        matches!(process_start_time(self.pid), Some((_, false)))
    }

    fn wait_gone(&self) {
        let deadline = Instant::now() + PATIENCE;
        while self.alive() {
            assert!(Instant::now() < deadline, "the shim did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log's entries, checked to be in the CRI format.
    fn entries(&self) -> Vec<(Stream, Tag, String)> {
        read_entries(&self.log())
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if let Ok(container) = Container::load(&self.root(), &self.id) {
            let _ = container.delete(true);
        }
        // The shim's pid could only have been reused if it had exited; its start time tells.
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A client connection.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, request: &Value) {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        self.writer.write_all(&line).unwrap();
    }

    fn receive(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "the shim closed the connection");
        let response: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(response.version, 1);
        response
    }

    fn request(&mut self, request: Value) -> Response {
        self.send(&request);
        self.receive()
    }

    /// Send a session request; after its `ok` the connection carries frames.
    fn session(mut self, request: Value) -> (Session, Response) {
        let response = self.request(request.clone());
        assert!(response.ok, "{request} failed: {:?}", response.error);
        // A test that goes wrong fails instead of hanging.
        self.writer.set_read_timeout(Some(PATIENCE)).unwrap();
        let session = Session {
            reader: self.reader,
            writer: self.writer,
        };
        (session, response)
    }
}

/// An interactive session, spoken frame by frame.
struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Everything a session delivered up to its end.
#[derive(Debug, Default)]
struct Transcript {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<ExitInfo>,
}

impl Transcript {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Session {
    fn send(&mut self, kind: Kind, payload: &[u8]) {
        let mut bytes = Vec::new();
        frame::encode(kind, payload, &mut bytes);
        self.writer.write_all(&bytes).unwrap();
    }

    fn stdin(&mut self, data: &[u8]) {
        self.send(Kind::Stdin, data);
    }

    fn resize(&mut self, width: u16, height: u16) {
        self.send(Kind::Resize, &frame::resize_payload(width, height));
    }

    /// The next frame, or `None` when the shim closed the connection.
    fn next(&mut self) -> Option<(Kind, Vec<u8>)> {
        let mut header = [0u8; frame::HEADER_LEN];
        match self.reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => panic!("reading a frame: {e}"),
        }
        let (kind, len) = frame::parse_header(header).unwrap();
        let mut payload = vec![0u8; len];
        self.reader.read_exact(&mut payload).unwrap();
        Some((kind, payload))
    }

    /// Read frames into `t` until `done` holds or the session ends; true if `done` held.
    fn read_until(
        &mut self,
        t: &mut Transcript,
        mut done: impl FnMut(&Transcript) -> bool,
    ) -> bool {
        while !done(t) {
            match self.next() {
                Some((Kind::Stdout, data)) => t.stdout.extend(data),
                Some((Kind::Stderr, data)) => t.stderr.extend(data),
                Some((Kind::Exited, json)) => {
                    assert!(t.exit.is_none(), "a second exit frame");
                    t.exit = Some(serde_json::from_slice(&json).unwrap());
                }
                Some((kind, _)) => panic!("the shim sent a client's frame {kind:?}"),
                None => return done(t),
            }
        }
        true
    }

    /// Everything up to the end of the session, which must end with an exit.
    fn finish(&mut self) -> Transcript {
        let mut t = Transcript::default();
        self.read_until(&mut t, |_| false);
        assert!(t.exit.is_some(), "the session ended without an exit: {t:?}");
        t
    }
}

fn read_entries(path: &Path) -> Vec<(Stream, Tag, String)> {
    let text = std::fs::read(path).unwrap_or_default();
    text.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let entry = crilog::parse_line(line).unwrap_or_else(|| {
                panic!("not a CRI log line: {:?}", String::from_utf8_lossy(line))
            });
            assert_timestamp(entry.timestamp);
            (
                entry.stream,
                entry.tag,
                String::from_utf8_lossy(entry.text).into_owned(),
            )
        })
        .collect()
}

/// `2016-10-06T00:17:09.669794202Z`: RFC 3339, UTC, exactly nine fractional digits.
fn assert_timestamp(ts: &str) {
    let shape = ts
        .bytes()
        .map(|b| if b.is_ascii_digit() { b'9' } else { b })
        .collect::<Vec<u8>>();
    assert_eq!(shape, b"9999-99-99T99:99:99.999999999Z", "timestamp {ts:?}");
}

/// Poll until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn process(args: &[&str]) -> Value {
    json!({ "args": args, "cwd": "/", "env": ["PATH=/bin"], "user": { "uid": 0, "gid": 0 } })
}

/// A numeric field of /proc/PID/stat, counted from the state (field 3) on.
fn stat_field(pid: i32, index: usize) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may contain spaces: parse after its closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(index).unwrap().parse().unwrap()
}

fn parent_of(pid: i32) -> i32 {
    stat_field(pid, 1)
}

fn session_of(pid: i32) -> i32 {
    stat_field(pid, 3)
}

#[test]
fn output_is_logged_in_the_cri_format() {
    // 40000 bytes without a newline: two partial entries of 16 KiB, then the rest as a full line.
    let script = "echo out; echo err >&2; head -c 40000 /dev/zero | tr '\\0' a; echo; printf last";
    let shim = Shim::launch(&["sh", "-c", script], &["--start"]);
    let exit = shim.wait();
    assert_eq!(exit.exit_code, 0);

    let entries = shim.entries();
    let stdout: Vec<(Tag, String)> = entries
        .iter()
        .filter(|e| e.0 == Stream::Stdout)
        .map(|e| (e.1, e.2.clone()))
        .collect();
    let stderr: Vec<(Tag, String)> = entries
        .iter()
        .filter(|e| e.0 == Stream::Stderr)
        .map(|e| (e.1, e.2.clone()))
        .collect();
    let a = |n| "a".repeat(n);
    assert_eq!(
        stdout,
        vec![
            (Tag::Full, "out".to_string()),
            (Tag::Partial, a(16384)),
            (Tag::Partial, a(16384)),
            (Tag::Full, a(40000 - 2 * 16384)),
            (Tag::Full, "last".to_string()),
        ]
    );
    assert_eq!(stderr, vec![(Tag::Full, "err".to_string())]);
}

#[test]
fn exit_code_is_recorded_in_the_exit_file() {
    let shim = Shim::launch(&["sh", "-c", "exit 3"], &[]);
    let state = shim.ok(json!({"op": "state"}));
    assert_eq!(state.status, Some(peapod_runtime::Status::Created));
    assert!(state.exit.is_none());
    assert!(
        ExitInfo::read(&shim.exit_file()).unwrap().is_none(),
        "no exit file before the exit"
    );

    shim.ok(json!({"op": "start"}));
    let exit = shim.wait();
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, None, false)
    );
    assert_eq!(
        ExitInfo::read(&shim.exit_file()).unwrap(),
        Some(exit.clone())
    );
    chrono::DateTime::parse_from_rfc3339(&exit.exited_at).unwrap();

    let state = shim.ok(json!({"op": "state"}));
    assert_eq!(state.status, Some(peapod_runtime::Status::Stopped));
    assert_eq!(state.exit, Some(exit));
}

#[test]
fn kill_through_the_socket_records_the_signal() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    assert_eq!(
        shim.ok(json!({"op": "state"})).status,
        Some(peapod_runtime::Status::Running)
    );
    shim.ok(json!({"op": "kill", "signal": "KILL"}));
    let exit = shim.wait();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert_eq!(ExitInfo::read(&shim.exit_file()).unwrap(), Some(exit));
    // A stopped container cannot be signalled, and says so.
    let late = shim.request(json!({"op": "kill", "signal": "TERM"}));
    assert!(!late.ok && late.error.is_some());
}

#[test]
fn the_shim_outlives_its_launcher() {
    let script = "trap 'exit 7' TERM; echo ready; sleep 1000 & wait";
    let shim = Shim::launch(&["sh", "-c", script], &[]);
    // The launcher has exited (we read its whole output); the shim lives on, re-parented away
    // from us.
    assert!(shim.alive());
    assert_ne!(parent_of(shim.pid), std::process::id() as i32);
    assert_ne!(session_of(shim.pid), session_of(std::process::id() as i32));
    shim.ok(json!({"op": "start"}));
    // A PID namespace's init ignores signals it has no handler for: wait for the trap.
    eventually("the trap", || shim.entries().iter().any(|e| e.2 == "ready"));
    shim.ok(json!({"op": "kill", "signal": "TERM"}));
    eventually("the exit file", || shim.exit_file().exists());
    let exit = ExitInfo::read(&shim.exit_file()).unwrap().unwrap();
    assert_eq!((exit.exit_code, exit.signal), (7, None));
}

#[test]
fn stdin_is_an_open_pipe_only_when_asked_for() {
    let stdin_of = |shim: &Shim| {
        let pid = shim.ok(json!({"op": "state"})).pid.unwrap();
        std::fs::read_link(format!("/proc/{pid}/fd/0"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let with = Shim::launch(&["sh", "-c", "read line; exit 5"], &["--stdin"]);
    assert!(stdin_of(&with).starts_with("pipe:"), "{}", stdin_of(&with));
    with.ok(json!({"op": "start"}));
    // The shim holds the pipe open, so `read` blocks instead of seeing end-of-file.
    assert_eq!(
        with.ok(json!({"op": "state"})).status,
        Some(peapod_runtime::Status::Running)
    );

    let without = Shim::launch(&["sh", "-c", "read line; exit 5"], &["--start"]);
    assert_eq!(without.wait().exit_code, 5);
}

#[test]
fn exec_returns_output_and_exit_code() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let response = shim.ok(json!({
        "op": "exec",
        "process": process(&["sh", "-c", "echo out; echo err >&2; exit 4"]),
    }));
    let exec = response.exec.unwrap();
    assert_eq!((exec.exit_code, exec.timed_out), (4, false));
    assert_eq!(exec.stdout_bytes().unwrap(), b"out\n");
    assert_eq!(exec.stderr_bytes().unwrap(), b"err\n");
    // The exec runs inside the container: it sees the container's hostname.
    let exec = shim
        .ok(json!({"op": "exec", "process": process(&["hostname"])}))
        .exec
        .unwrap();
    assert_eq!(exec.stdout_bytes().unwrap(), b"peapod-test\n");
    // Large output (more than any pipe or socket buffer) arrives whole.
    let exec = shim
        .ok(json!({"op": "exec", "process": process(&["seq", "1", "200000"])}))
        .exec
        .unwrap();
    let expected: String = (1..=200000).map(|n| format!("{n}\n")).collect();
    assert_eq!(exec.stdout_bytes().unwrap(), expected.as_bytes());
    assert!(!exec.truncated);
}

#[test]
fn exec_with_a_terminal() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let response = shim.ok(json!({
        "op": "exec",
        "tty": true,
        "process": process(&["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty"]),
    }));
    let exec = response.exec.unwrap();
    assert_eq!(exec.exit_code, 0);
    let out = String::from_utf8(exec.stdout_bytes().unwrap()).unwrap();
    assert_eq!(out.trim_end(), "on-a-tty");
}

#[test]
fn exec_timeout_kills_the_process() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let response = shim.ok(json!({
        "op": "exec",
        "timeout_ms": 200,
        "process": process(&["sleep", "1000"]),
    }));
    let exec = response.exec.unwrap();
    assert!(exec.timed_out);
    assert_eq!((exec.exit_code, exec.signal), (137, Some(9)));
    // The container itself is unharmed.
    assert_eq!(
        shim.ok(json!({"op": "state"})).status,
        Some(peapod_runtime::Status::Running)
    );
}

#[test]
fn a_hung_client_does_not_block_others() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    // Half a request, never finished; a client waiting for the exit; a long exec.
    let mut hung = shim.connect();
    hung.writer.write_all(b"{\"op\": \"sta").unwrap();
    let mut waiter = shim.connect();
    waiter.send(&json!({"op": "wait"}));
    let mut exec = shim.connect();
    exec.send(&json!({"op": "exec", "process": process(&["sleep", "1000"]), "timeout_ms": 600000}));
    // Meanwhile others are served, and the exec's process runs beside the init.
    let container = Container::load(&shim.root(), &shim.id).unwrap();
    eventually("the exec's process", || {
        container.processes().unwrap().len() == 2
    });
    for _ in 0..3 {
        assert_eq!(
            shim.ok(json!({"op": "state"})).status,
            Some(peapod_runtime::Status::Running)
        );
    }
    let bad = shim.request(json!({"op": "no-such-op"}));
    assert!(!bad.ok);
    // Kill everything in the container: the exec returns, the waiter learns about the exit.
    shim.ok(json!({"op": "kill", "signal": "KILL", "all": true}));
    let exec = exec.receive().exec.unwrap();
    assert_eq!(exec.signal, Some(9));
    let exit = waiter.receive().exit.unwrap();
    assert_eq!(exit.signal, Some(9));
}

#[test]
fn reopen_log_writes_to_a_new_file() {
    // The container writes its second line when an exec writes to the FIFO.
    let script = "mkfifo /tmp/go; echo one; read x < /tmp/go; echo two; exec sleep 1000";
    let shim = Shim::launch(&["sh", "-c", script], &["--start"]);
    let log = shim.log();
    eventually("the first line", || {
        shim.entries().iter().any(|e| e.2 == "one")
    });
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    shim.ok(json!({"op": "reopen_log"}));
    assert!(log.exists(), "reopen creates the log again");
    let exec =
        shim.ok(json!({"op": "exec", "process": process(&["sh", "-c", "echo go > /tmp/go"])}));
    assert_eq!(exec.exec.unwrap().exit_code, 0);
    eventually("the second line", || {
        shim.entries().iter().any(|e| e.2 == "two")
    });
    assert!(read_entries(&rotated).iter().all(|e| e.2 != "two"));
    assert_eq!(read_entries(&rotated).len(), 1);
}

#[test]
fn shutdown_waits_for_the_container_then_exits() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    shim.ok(json!({"op": "shutdown"}));
    // The container is still running, so the shim stays.
    assert!(shim.ok(json!({"op": "state"})).status == Some(peapod_runtime::Status::Running));
    shim.ok(json!({"op": "kill", "signal": "KILL"}));
    shim.wait_gone();
    assert!(!shim.socket().exists(), "the socket is removed");
    assert_eq!(
        ExitInfo::read(&shim.exit_file()).unwrap().unwrap().signal,
        Some(9)
    );
}

#[test]
fn delete_removes_the_container_and_ends_the_shim() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let refused = shim.request(json!({"op": "delete"}));
    assert!(
        !refused.ok,
        "a running container is not deleted without force"
    );
    shim.ok(json!({"op": "delete", "force": true}));
    shim.wait_gone();
    assert!(!shim.root().join(&shim.id).exists());
    assert!(!shim.socket().exists());
    assert_eq!(
        ExitInfo::read(&shim.exit_file()).unwrap().unwrap().signal,
        Some(9)
    );
}

#[test]
fn the_shim_exits_when_its_stopped_container_is_deleted_by_someone_else() {
    let shim = Shim::launch(&["true"], &["--start"]);
    shim.wait();
    Container::load(&shim.root(), &shim.id)
        .unwrap()
        .delete(false)
        .unwrap();
    shim.wait_gone();
}

#[test]
fn a_failed_create_is_reported_and_leaves_nothing_behind() {
    let bundle = Bundle::new(&["/no/such/program"]);
    bundle.write();
    let id = unique("shim-bad");
    let dir = tempfile::Builder::new()
        .prefix("peapod-shim-test-")
        .tempdir()
        .unwrap();
    let out = launch_raw(&id, &bundle, dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("creating container {id}")),
        "{stderr}"
    );
    assert!(stderr.contains("/no/such/program"), "{stderr}");
    let (root, socket, _, exit) = paths(dir.path());
    assert!(!root.join(&id).exists(), "state directory left behind");
    assert!(!socket.exists(), "socket left behind");
    assert!(!exit.exists());
    for hierarchy in Cgroup::hierarchies().unwrap() {
        let leftover = hierarchy.mountpoint.join("peapod").join(&id);
        assert!(
            !leftover.exists(),
            "cgroup {} left behind",
            leftover.display()
        );
    }
}

#[test]
fn a_container_with_a_terminal_logs_the_terminal_as_stdout() {
    let mut bundle = Bundle::new(&[
        "sh",
        "-c",
        "test -t 0 && test -t 1 && test -t 2 && echo on-a-tty",
    ]);
    bundle.config["process"]["terminal"] = json!(true);
    bundle.write();
    let shim = Shim::launch_bundle(bundle, &["--start"]);
    assert_eq!(shim.wait().exit_code, 0);
    // A terminal turns "\n" into "\r\n"; the log keeps what the terminal said.
    let entries = shim.entries();
    let lines: Vec<(Stream, Tag, &str)> = entries
        .iter()
        .map(|(s, t, text)| (*s, *t, text.trim_end_matches('\r')))
        .collect();
    assert_eq!(lines, vec![(Stream::Stdout, Tag::Full, "on-a-tty")]);
}

#[test]
fn an_oom_kill_is_recorded() {
    // `tail` keeps the current line in memory, and /dev/zero has no line ends.
    let mut bundle = Bundle::new(&["tail", "/dev/zero"]);
    bundle.config["linux"]["resources"] = json!({ "memory": { "limit": 32 * 1024 * 1024 } });
    bundle.write();
    let shim = Shim::launch_bundle(bundle, &["--start"]);
    let exit = shim.wait();
    assert_eq!(exit.signal, Some(9));
    assert!(exit.oom_killed, "{exit:?}");
}

#[test]
fn orphans_are_reaped_by_the_shim() {
    // Without a PID namespace of its own, the container's orphans are re-parented to the shim,
    // its subreaper.
    let mut bundle = Bundle::new(&["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"]);
    let namespaces = bundle.config["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|ns| ns["type"] != "pid");
    bundle.write();
    let shim = Shim::launch_bundle(bundle, &["--start"]);
    assert_eq!(shim.wait().exit_code, 0);
    let orphan: i32 = shim.entries()[0].2.parse().unwrap();
    assert_eq!(parent_of(orphan), shim.pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(orphan),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Not left a zombie: the shim reaped it.
    eventually("the orphan to be reaped", || {
        process_start_time(orphan).is_none()
    });
}

#[test]
fn a_second_shim_on_the_same_socket_is_refused() {
    let shim = Shim::launch(&["sleep", "1000"], &[]);
    let other_id = unique("shim-dup");
    let bundle = Bundle::new(&["true"]);
    bundle.write();
    let out = launch_raw(&other_id, &bundle, shim.dir.path(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another shim is listening"), "{stderr}");
    assert!(!shim.root().join(&other_id).exists());
    // The first shim is unharmed.
    assert_eq!(
        shim.ok(json!({"op": "state"})).status,
        Some(peapod_runtime::Status::Created)
    );
}

fn exec_session(shim: &Shim, process: Value, stdin: bool) -> (Session, i32) {
    let (session, response) = shim
        .connect()
        .session(json!({"op": "exec_session", "process": process, "stdin": stdin}));
    (
        session,
        response.pid.expect("an exec session answers with its pid"),
    )
}

#[test]
fn exec_session_relays_stdin_to_stdout() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let (mut session, _) = exec_session(&shim, process(&["cat"]), true);
    session.stdin(b"hello\n");
    let mut t = Transcript::default();
    assert!(
        session.read_until(&mut t, |t| t.stdout == b"hello\n"),
        "{t:?}"
    );
    // Closing stdin is end-of-file for `cat`, which then exits.
    session.send(Kind::CloseStdin, &[]);
    let t = session.finish();
    assert!(t.stdout.is_empty() && t.stderr.is_empty(), "{t:?}");
    let exit = t.exit.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (0, None));
}

#[test]
fn exec_session_keeps_stderr_apart_and_reports_the_exit_code() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let script = "echo out; echo err >&2; echo more";
    let (mut session, pid) = exec_session(&shim, process(&["sh", "-c", script]), false);
    let t = session.finish();
    assert_eq!(t.stdout(), "out\nmore\n");
    assert_eq!(t.stderr, b"err\n");
    assert_eq!(t.exit.unwrap().pid, pid);

    let (mut session, _) = exec_session(&shim, process(&["sh", "-c", "exit 3"]), false);
    let exit = session.finish().exit.unwrap();
    assert_eq!((exit.exit_code, exit.signal), (3, None));
}

#[test]
fn exec_session_output_larger_than_any_buffer_arrives_whole() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let (mut session, _) = exec_session(&shim, process(&["seq", "1", "200000"]), false);
    // Not reading for a while: the shim stops reading the process instead of buffering.
    let container = Container::load(&shim.root(), &shim.id).unwrap();
    eventually("the exec's process", || {
        container.processes().unwrap().len() == 2
    });
    let t = session.finish();
    let expected: String = (1..=200000).map(|n| format!("{n}\n")).collect();
    assert!(t.stdout() == expected, "{} bytes of output", t.stdout.len());
    assert_eq!(t.exit.unwrap().exit_code, 0);
}

#[test]
fn exec_session_with_a_terminal_is_resized() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let mut tty = process(&[
        "sh",
        "-c",
        "read line; stty size; test -t 0 && echo on-a-tty",
    ]);
    tty["terminal"] = json!(true);
    let (mut session, _) = exec_session(&shim, tty, true);
    // Frames are handled in order: the terminal has its size before `read` returns.
    session.resize(100, 40);
    session.stdin(b"\n");
    let t = session.finish();
    let out = t.stdout();
    assert!(out.contains("40 100\r\n"), "{out:?}");
    assert!(out.contains("on-a-tty"), "{out:?}");
    assert!(t.stderr.is_empty(), "a terminal has no separate stderr");
    assert_eq!(t.exit.unwrap().exit_code, 0);
}

#[test]
fn a_client_leaving_an_exec_session_kills_its_process() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let container = Container::load(&shim.root(), &shim.id).unwrap();
    let (session, pid) = exec_session(&shim, process(&["sleep", "1000"]), true);
    assert!(container.processes().unwrap().contains(&pid));
    drop(session);
    eventually("the process to be killed and reaped", || {
        process_start_time(pid).is_none() && container.processes().unwrap().len() == 1
    });
    // The container itself is unharmed.
    assert_eq!(
        shim.ok(json!({"op": "state"})).status,
        Some(peapod_runtime::Status::Running)
    );
}

#[test]
fn a_client_breaking_the_frame_protocol_loses_its_session() {
    let shim = Shim::launch(&["sleep", "1000"], &["--start"]);
    let (mut session, pid) = exec_session(&shim, process(&["sleep", "1000"]), false);
    // A frame longer than the limit.
    let mut header = frame::header(Kind::Stdin, 0);
    header[1..].copy_from_slice(&(frame::MAX_PAYLOAD as u32 + 1).to_be_bytes());
    session.writer.write_all(&header).unwrap();
    assert!(session.next().is_none(), "the shim closes the connection");
    eventually("the process to be killed", || {
        process_start_time(pid).is_none()
    });
}

#[test]
fn attach_relays_output_and_detaching_leaves_the_container_running() {
    let script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done";
    let shim = Shim::launch(&["sh", "-c", script], &["--start"]);
    let (mut session, _) = shim
        .connect()
        .session(json!({"op": "attach_session", "stdin": false}));
    let mut t = Transcript::default();
    assert!(session.read_until(&mut t, |t| t.stdout().matches('\n').count() >= 3));
    // From the moment of the attach on: lines, whole or cut anywhere, in order.
    let out = t.stdout();
    let numbers: Vec<u64> = out
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{out:?}");
    drop(session);

    let logged = shim.entries().len();
    eventually("more log lines after the detach", || {
        shim.entries().len() > logged + 2
    });
    assert_eq!(
        shim.ok(json!({"op": "state"})).status,
        Some(peapod_runtime::Status::Running)
    );
    // The log got everything, attached or not.
    let lines: Vec<String> = shim.entries().into_iter().map(|e| e.2).collect();
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line, &format!("line {n}"));
    }
}

#[test]
fn attach_with_stdin_feeds_the_container_and_ends_with_its_exit() {
    let shim = Shim::launch(&["cat"], &["--start", "--stdin"]);
    let (mut session, _) = shim
        .connect()
        .session(json!({"op": "attach_session", "stdin": true}));
    session.stdin(b"from the client\n");
    eventually("the container's log", || {
        shim.entries().iter().any(|e| e.2 == "from the client")
    });
    shim.ok(json!({"op": "kill", "signal": "KILL"}));
    let t = session.finish();
    assert_eq!(t.stdout(), "from the client\n");
    let exit = t.exit.unwrap();
    assert_eq!(exit.signal, Some(9));
    assert_eq!(shim.wait(), exit, "the attach's exit is the container's");
}

#[test]
fn closing_an_attached_stdin_leaves_the_container_stdin_open() {
    let script = "while read line; do echo \"got $line\"; done; echo eof";
    let shim = Shim::launch(&["sh", "-c", script], &["--start", "--stdin"]);
    let attach = || {
        shim.connect()
            .session(json!({"op": "attach_session", "stdin": true}))
            .0
    };
    let mut first = attach();
    first.stdin(b"one\n");
    first.send(Kind::CloseStdin, &[]);
    let mut t = Transcript::default();
    assert!(
        first.read_until(&mut t, |t| t.stdout() == "got one\n"),
        "{t:?}"
    );
    drop(first);
    // A second client still reaches the container: nobody closed its stdin.
    let mut second = attach();
    second.stdin(b"two\n");
    let mut t = Transcript::default();
    assert!(
        second.read_until(&mut t, |t| t.stdout() == "got two\n"),
        "{t:?}"
    );
    assert!(shim.entries().iter().all(|e| e.2 != "eof"));
}

#[test]
fn with_stdin_once_the_first_attach_to_close_its_input_ends_the_containers_stdin() {
    let script = "while read line; do echo \"got $line\"; done; echo eof; sleep 1000";
    let shim = Shim::launch(
        &["sh", "-c", script],
        &["--start", "--stdin", "--stdin-once"],
    );
    let attach = || {
        shim.connect()
            .session(json!({"op": "attach_session", "stdin": true}))
            .0
    };
    // A second client attached meanwhile does not keep the stdin open.
    let _other = attach();
    let mut first = attach();
    first.stdin(b"one\n");
    first.send(Kind::CloseStdin, &[]);
    let mut t = Transcript::default();
    assert!(
        first.read_until(&mut t, |t| t.stdout() == "got one\neof\n"),
        "{t:?}"
    );
    eventually("eof in the log", || {
        shim.entries().iter().any(|e| e.2 == "eof")
    });
    // The stdin is gone for good: a later attach's input reaches nobody.
    let mut later = attach();
    later.stdin(b"two\n");
    drop(later);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(shim.entries().iter().all(|e| e.2 != "got two"));
    shim.ok(json!({"op": "kill", "signal": "KILL"}));
    shim.wait();
}

#[test]
fn attach_to_a_container_with_a_terminal_resizes_it() {
    let mut bundle = Bundle::new(&["sh", "-c", "read line; stty size"]);
    bundle.config["process"]["terminal"] = json!(true);
    bundle.write();
    let shim = Shim::launch_bundle(bundle, &["--start", "--stdin"]);
    let (mut session, _) = shim
        .connect()
        .session(json!({"op": "attach_session", "stdin": true}));
    session.resize(100, 40);
    session.stdin(b"\n");
    let t = session.finish();
    assert!(t.stdout().contains("40 100"), "{t:?}");
    assert_eq!(t.exit.unwrap().exit_code, 0);
}

#[test]
fn sessions_into_a_stopped_container_are_refused() {
    let shim = Shim::launch(&["true"], &["--start"]);
    shim.wait();
    for request in [
        json!({"op": "attach_session"}),
        json!({"op": "exec_session", "process": process(&["true"])}),
    ] {
        let response = shim.request(request);
        assert!(!response.ok);
        assert!(response.error.unwrap().contains("has exited"));
    }
}
