//! The shim's event loop: one thread, one poll(2) over the signal pipe, the control socket, its
//! clients, the container's output, the output of running execs and interactive sessions.
//!
//! Nothing in the loop waits for anything but poll, except the runtime library's own short,
//! bounded steps (start, exec's handshake); that is what keeps a hung client, a chatty container
//! and a long exec from delaying each other.
use std::io::ErrorKind;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use peapod_runtime::shim_protocol::{ExitInfo, Op, Request, Response, PROTOCOL_VERSION};
use peapod_runtime::{signal, Container, Status};

use crate::clients::Client;
use crate::execs::{Ending, ExecJob};
use crate::output::{Flow, Log, Output, READ_SIZE};
use crate::sessions::{duplicate, Part, Pending, Session};
use crate::signals::Signals;

/// After the init exited, how long its output may still take to reach the log before the exit
/// is published anyway (a process that escaped its PID namespace may hold the pipe).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Once the container has exited, how often we look whether it has been deleted.
const DELETED_CHECK: Duration = Duration::from_secs(1);

/// Where the shim keeps what outlives it.
pub struct Paths {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub exit_file: PathBuf,
}

pub struct Shim {
    pub paths: Paths,
    /// `None` once deleted.
    pub container: Option<Container>,
    pub id: String,
    pub init: Pid,
    pub signals: Signals,
    pub listener: UnixListener,
    pub log: Log,
    pub outputs: Vec<Output>,
    /// The writing end of the container's stdin pipe, held so that the container does not see
    /// end-of-file (`--stdin`), and written by attached clients. Non-blocking.
    pub stdin: Option<OwnedFd>,
    /// `--stdin-once`: the first attached client to close its input closes `stdin` for good.
    pub stdin_once: bool,
    /// The master side of the container's terminal, if it has one: attached clients resize it
    /// (and write to it, since the terminal is the container's stdin).
    pub terminal: Option<OwnedFd>,
    pub clients: Vec<Client>,
    /// Connections that became interactive sessions.
    pub sessions: Vec<Session>,
    pub next_client: u64,
    pub execs: Vec<ExecJob>,
    /// The init was reaped; its exit is published once its output has drained.
    pub reaped: Option<(ExitInfo, Instant)>,
    pub exit: Option<ExitInfo>,
    /// Clients whose `wait` is answered at the exit.
    pub waiting: Vec<u64>,
    /// The client whose `delete` is carried out at the exit.
    pub deleting: Option<u64>,
    pub shutdown: bool,
}

/// The outcome of a request: answered at once, or once something has happened.
enum Reply {
    Now(Response),
    Later,
    /// Answer `ok`, then hand the connection over to a session.
    Session(Pending),
}

/// What a poll result refers to.
#[derive(Debug, Clone, Copy)]
enum Source {
    Signals,
    Listener,
    Output(usize),
    Client(usize),
    Exec(usize, usize),
    Session(usize, Part),
}

impl Shim {
    pub fn run(mut self) -> Result<()> {
        let mut buf = vec![0u8; READ_SIZE];
        tracing::info!(id = %self.id, pid = self.init.as_raw(), "serving");
        // Set-up ran most of the shim's code once; the loop needs little of it (memory.rs).
        let mut shedder = peapod_runtime::memory::Shedder::for_current_mappings();
        shedder.shed();
        let mut shed_pending = false;
        while !self.should_exit() {
            for (source, revents) in self.poll()? {
                // Copying output is the loop's steady work; anything else runs code it does
                // not need again soon.
                shed_pending |= !matches!(source, Source::Output(_));
                self.dispatch(source, revents, &mut buf);
            }
            self.housekeeping();
            if shed_pending && self.is_quiet() {
                shedder.shed();
                shed_pending = false;
            }
        }
        self.leave();
        Ok(())
    }

    /// No request is being served and nothing runs on anyone's behalf; connected clients at most
    /// wait (peapodd keeps a `wait` for the exit open all the time).
    fn is_quiet(&self) -> bool {
        self.execs.is_empty()
            && self.sessions.is_empty()
            && self.clients.iter().all(Client::is_idle)
    }

    fn should_exit(&self) -> bool {
        if self.container.is_none() {
            return true;
        }
        if self.exit.is_none() {
            return false;
        }
        // Stopped: leave when asked to or when someone deleted the container behind our back.
        self.shutdown || !self.paths.root.join(&self.id).exists()
    }

    fn poll(&self) -> Result<Vec<(Source, PollFlags)>> {
        let mut watched: Vec<(Source, BorrowedFd<'_>, PollFlags)> = vec![
            (Source::Signals, self.signals.fd(), PollFlags::POLLIN),
            (
                Source::Listener,
                std::os::fd::AsFd::as_fd(&self.listener),
                PollFlags::POLLIN,
            ),
        ];
        for (i, output) in self.outputs.iter().enumerate() {
            watched.push((Source::Output(i), output.fd(), PollFlags::POLLIN));
        }
        for (i, client) in self.clients.iter().enumerate() {
            watched.push((Source::Client(i), client.fd(), client.interest()));
        }
        for (j, job) in self.execs.iter().enumerate() {
            for (k, fd) in job.fds() {
                watched.push((Source::Exec(j, k), fd, PollFlags::POLLIN));
            }
        }
        for (j, session) in self.sessions.iter().enumerate() {
            for (part, fd, flags) in session.watch() {
                watched.push((Source::Session(j, part), fd, flags));
            }
        }
        let mut fds: Vec<PollFd<'_>> = watched
            .iter()
            .map(|(_, fd, flags)| PollFd::new(*fd, *flags))
            .collect();
        match nix::poll::poll(&mut fds, self.timeout()) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(e).context("polling"),
        }
        Ok(watched
            .iter()
            .zip(&fds)
            .filter_map(|((source, _, _), fd)| {
                fd.revents().filter(|r| !r.is_empty()).map(|r| (*source, r))
            })
            .collect())
    }

    /// Until the next thing that happens by the clock, if anything does.
    fn timeout(&self) -> PollTimeout {
        let mut deadlines: Vec<Instant> = self
            .execs
            .iter()
            .filter_map(ExecJob::next_deadline)
            .chain(self.sessions.iter().filter_map(Session::next_deadline))
            .collect();
        if let Some((_, at)) = &self.reaped {
            deadlines.push(*at + OUTPUT_GRACE);
        }
        let now = Instant::now();
        if self.exit.is_some() {
            deadlines.push(now + DELETED_CHECK);
        }
        match deadlines.into_iter().min() {
            None => PollTimeout::NONE,
            Some(at) => {
                // Round up, so that we do not wake a moment too early and spin.
                let ms = at.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    fn dispatch(&mut self, source: Source, revents: PollFlags, buf: &mut [u8]) {
        match source {
            Source::Signals => {
                for sig in self.signals.drain() {
                    if matches!(sig, Signal::SIGTERM | Signal::SIGINT) {
                        tracing::info!(signal = %sig, "exiting once the container has stopped");
                        self.shutdown = true;
                    }
                }
            }
            Source::Listener => self.accept(),
            Source::Output(i) => {
                if let Some(output) = self.outputs.get_mut(i) {
                    let sessions = &mut self.sessions;
                    let mut tee = |stream, data: &[u8]| {
                        for session in sessions.iter_mut() {
                            session.tee(stream, data);
                        }
                    };
                    if output.pump(&mut self.log, buf, &mut tee) == Flow::Ended {
                        output.ended = true;
                    }
                }
            }
            Source::Client(i) => {
                if let Some(client) = self.clients.get_mut(i) {
                    client.on_event(revents, buf);
                }
                self.serve(i);
            }
            Source::Exec(j, k) => {
                if let Some(job) = self.execs.get_mut(j) {
                    job.read(k, buf);
                }
            }
            Source::Session(j, part) => {
                if let Some(session) = self.sessions.get_mut(j) {
                    session.on_event(part, revents, buf);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => match Client::new(self.next_client, stream) {
                    Ok(client) => {
                        self.next_client += 1;
                        self.clients.push(client);
                    }
                    Err(e) => tracing::warn!(error = %e, "setting up a client"),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors, say: keep serving those we have.
                    tracing::warn!(error = %e, "accepting a client");
                    return;
                }
            }
        }
    }

    /// Everything that follows from the events: reaping, timeouts, finished execs and clients,
    /// the exit.
    fn housekeeping(&mut self) {
        self.outputs.retain(|o| !o.ended);
        self.reap();
        let now = Instant::now();
        for job in &mut self.execs {
            job.enforce_timeout(now);
        }
        let (done, running): (Vec<ExecJob>, Vec<ExecJob>) = std::mem::take(&mut self.execs)
            .into_iter()
            .partition(|job| job.is_done(now));
        self.execs = running;
        // The memory their output took goes back with the shedding once the answers are out.
        for job in done {
            let client = job.client;
            let response = Response {
                exec: Some(job.result()),
                ..Response::ok()
            };
            self.answer_later(client, &response);
        }
        self.drop_finished_clients();
        self.drop_finished_sessions(now);
        if let Some((_, at)) = &self.reaped {
            if self.outputs.is_empty() || now >= *at + OUTPUT_GRACE {
                self.publish_exit();
            }
        }
    }

    fn drop_finished_clients(&mut self) {
        let (gone, staying): (Vec<Client>, Vec<Client>) = std::mem::take(&mut self.clients)
            .into_iter()
            .partition(Client::finished);
        self.clients = staying;
        for client in gone {
            self.waiting.retain(|id| *id != client.id);
            if self.deleting == Some(client.id) {
                // The delete still happens; only the answer has nobody to go to.
                tracing::info!("the client asking for delete went away");
            }
            let (orphaned, kept): (Vec<ExecJob>, Vec<ExecJob>) = std::mem::take(&mut self.execs)
                .into_iter()
                .partition(|job| job.client == client.id);
            self.execs = kept;
            for job in orphaned {
                tracing::info!(
                    pid = job.pid.as_raw(),
                    "exec client went away, killing its process"
                );
                job.cancel();
            }
        }
    }

    fn drop_finished_sessions(&mut self, now: Instant) {
        for session in &mut self.sessions {
            session.tick(now);
        }
        self.close_stdin_once();
        let (gone, staying): (Vec<Session>, Vec<Session>) = std::mem::take(&mut self.sessions)
            .into_iter()
            .partition(Session::finished);
        self.sessions = staying;
        for session in gone {
            tracing::debug!(client = session.client, "session ended");
            session.end();
        }
    }

    /// With `--stdin-once`, the container's stdin ends with the input of the first attached
    /// client that wrote to it (as containerd does for `stdin_once` without a terminal, what
    /// `kubectl run -i` relies on): every write end goes, ours and the other clients' copies,
    /// so that the container reads end-of-file.
    fn close_stdin_once(&mut self) {
        if !self.stdin_once || self.stdin.is_none() {
            return;
        }
        if let Some(session) = self.sessions.iter().find(|s| s.attach_input_ended()) {
            tracing::info!(
                client = session.client,
                "stdin_once: the attached client closed its input, closing the container's stdin"
            );
            self.stdin = None;
            for session in &mut self.sessions {
                session.close_attach_input();
            }
        }
    }

    /// Collect every child that has ended: the init, execs, and orphans reparented to us.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for children");
                    return;
                }
                Ok(status) => status,
            };
            let (pid, ending) = match status {
                WaitStatus::Exited(pid, code) => (pid, Ending { code, signal: None }),
                WaitStatus::Signaled(pid, sig, _) => (
                    pid,
                    Ending {
                        code: signal::exit_code(sig),
                        signal: Some(sig as i32),
                    },
                ),
                _ => continue,
            };
            if pid == self.init {
                self.init_exited(ending);
            } else if let Some(job) = self.execs.iter_mut().find(|job| job.pid == pid) {
                job.exited(ending);
            } else if let Some(session) = self.sessions.iter_mut().find(|s| s.pid() == Some(pid)) {
                session.exited(ending);
            } else {
                tracing::debug!(pid = pid.as_raw(), code = ending.code, "reaped an orphan");
            }
        }
    }

    fn init_exited(&mut self, ending: Ending) {
        let oom_killed = match self
            .container
            .as_ref()
            .map(|c| c.cgroup().and_then(|cg| Ok(cg.oom_kills()?)))
        {
            Some(Ok(kills)) => kills > 0,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the OOM kill count");
                false
            }
            None => false,
        };
        let info = ExitInfo {
            pid: self.init.as_raw(),
            exit_code: ending.code,
            signal: ending.signal,
            exited_at: peapod_runtime::crilog::timestamp(),
            oom_killed,
        };
        tracing::info!(code = info.exit_code, signal = ?info.signal, oom_killed, "container exited");
        self.reaped = Some((info, Instant::now()));
    }

    /// The exit is final: record it, then answer everyone who waited for it.
    fn publish_exit(&mut self) {
        let Some((info, _)) = self.reaped.take() else {
            return;
        };
        if let Err(e) = info.write(&self.paths.exit_file) {
            tracing::error!(error = %e, "writing the exit file");
        }
        self.exit = Some(info.clone());
        for session in &mut self.sessions {
            session.container_exited(&info);
        }
        let response = Response {
            exit: Some(info),
            ..Response::ok()
        };
        for client in std::mem::take(&mut self.waiting) {
            self.answer_later(client, &response);
        }
        if let Some(client) = self.deleting.take() {
            let response = self.delete();
            self.answer_later(client, &response);
        }
    }

    /// Answer a request that was put off, then go on with the client's next one.
    fn answer_later(&mut self, id: u64, response: &Response) {
        let Some(i) = self.clients.iter().position(|c| c.id == id) else {
            return;
        };
        self.clients[i].busy = false;
        self.clients[i].respond(response);
        self.serve(i);
    }

    fn serve(&mut self, i: usize) {
        while let Some(request) = self.clients.get_mut(i).and_then(Client::next_request) {
            let reply = match request {
                Ok(request) => self.handle(i, request),
                Err(message) => Reply::Now(Response::error(message)),
            };
            match reply {
                Reply::Now(response) => self.clients[i].respond(&response),
                Reply::Later => {}
                Reply::Session(pending) => self.start_session(i, pending),
            }
        }
    }

    /// Answer `ok` (with an exec's pid), after which the connection carries the session's frames.
    fn start_session(&mut self, i: usize, pending: Pending) {
        let client = &mut self.clients[i];
        client.respond(&Response {
            pid: pending.pid().map(Pid::as_raw),
            ..Response::ok()
        });
        match client.hand_over() {
            Ok(conn) => {
                tracing::info!(client = client.id, "session started");
                self.sessions.push(Session::new(client.id, conn, pending));
            }
            Err(e) => {
                tracing::warn!(error = %e, "handing a connection to a session");
                pending.abort();
            }
        }
    }

    /// Answer a request now, or take it on and answer later (the client is busy meanwhile).
    fn handle(&mut self, i: usize, request: Request) -> Reply {
        match self.try_handle(i, request) {
            Ok(reply) => reply,
            Err(e) => Reply::Now(Response::error(format!("{e:#}"))),
        }
    }

    fn try_handle(&mut self, i: usize, request: Request) -> Result<Reply> {
        if request.version > PROTOCOL_VERSION {
            anyhow::bail!(
                "protocol version {} is newer than this shim's {PROTOCOL_VERSION}",
                request.version
            );
        }
        let client = self.clients[i].id;
        tracing::debug!(client, op = ?request.op, "request");
        let done = Reply::Now(Response::ok());
        Ok(match request.op {
            Op::State => Reply::Now(self.state()?),
            Op::Start => {
                self.container()?.start()?;
                done
            }
            Op::Kill { signal: name, all } => {
                let sig = signal::parse(&name)?;
                self.container()?.kill(sig, all)?;
                done
            }
            Op::Exec {
                process,
                timeout_ms,
                tty,
            } => {
                self.running()?;
                let timeout = timeout_ms.map(Duration::from_millis);
                let job = ExecJob::start(self.container()?, *process, timeout, tty, client)?;
                tracing::info!(pid = job.pid.as_raw(), "exec started");
                self.execs.push(job);
                self.clients[i].busy = true;
                Reply::Later
            }
            Op::ExecSession { process, stdin } => {
                self.running()?;
                let spawned = crate::execs::spawn(self.container()?, &process, stdin)?;
                tracing::info!(pid = spawned.pid.as_raw(), "exec session started");
                Reply::Session(Pending::Exec(spawned))
            }
            Op::AttachSession { stdin } => {
                self.running()?;
                Reply::Session(self.attach(stdin)?)
            }
            Op::ReopenLog => {
                self.log.reopen()?;
                done
            }
            Op::Wait => match &self.exit {
                Some(exit) => Reply::Now(Response {
                    exit: Some(exit.clone()),
                    ..Response::ok()
                }),
                None => {
                    self.waiting.push(client);
                    self.clients[i].busy = true;
                    Reply::Later
                }
            },
            Op::Delete { force } => self.request_delete(i, force)?,
            Op::Shutdown => {
                tracing::info!("shutdown requested");
                self.shutdown = true;
                done
            }
        })
    }

    /// Fail if the container has exited: nothing can run in it or be attached to any more.
    fn running(&self) -> Result<()> {
        if self.reaped.is_some() || self.exit.is_some() {
            anyhow::bail!("container {} has exited", self.id);
        }
        Ok(())
    }

    /// What an attach session writes to and resizes. The container's stdin is its terminal if it
    /// has one, else the pipe of `--stdin`; without `--stdin`, the client's input is dropped.
    fn attach(&self, stdin: bool) -> Result<Pending> {
        let terminal = match &self.terminal {
            Some(master) => Some(duplicate(master, "the terminal")?),
            None => None,
        };
        let input = match (stdin, &self.stdin, &self.terminal) {
            (false, _, _) => None,
            (true, None, _) => {
                tracing::info!("attach with stdin to a container without (or with a closed) stdin");
                None
            }
            (true, Some(_), Some(master)) => Some(duplicate(master, "the terminal")?),
            (true, Some(pipe), None) => Some(duplicate(pipe, "the stdin pipe")?),
        };
        Ok(Pending::Attach {
            stdin: input,
            terminal,
        })
    }

    fn container(&self) -> Result<&Container> {
        self.container
            .as_ref()
            .with_context(|| format!("container {} has been deleted", self.id))
    }

    fn state(&self) -> Result<Response> {
        let container = self.container()?;
        let status = if self.reaped.is_some() || self.exit.is_some() {
            Status::Stopped
        } else {
            container.status()?
        };
        Ok(Response {
            status: Some(status),
            pid: Some(container.pid()),
            exit: self.exit.clone(),
            ..Response::ok()
        })
    }

    /// Delete now if the container has exited; otherwise (with `force`, after killing it) once
    /// its exit is recorded, so that the exit is never lost.
    fn request_delete(&mut self, i: usize, force: bool) -> Result<Reply> {
        if self.exit.is_some() {
            return Ok(Reply::Now(self.delete()));
        }
        if self.deleting.is_some() {
            anyhow::bail!("a delete is already in progress");
        }
        let container = self.container()?;
        let status = match self.reaped {
            Some(_) => Status::Stopped,
            None => container.status()?,
        };
        if status != Status::Stopped {
            if !force {
                anyhow::bail!(
                    "container {} is {status}: stop it first or delete with force",
                    self.id
                );
            }
            container.kill(Signal::SIGKILL, true)?;
            // A frozen process cannot die: thaw it so that the kill takes effect.
            if status == Status::Paused {
                container.resume()?;
            }
        }
        self.deleting = Some(self.clients[i].id);
        self.clients[i].busy = true;
        Ok(Reply::Later)
    }

    fn delete(&mut self) -> Response {
        let Some(container) = self.container.take() else {
            return Response::ok();
        };
        match container.delete(false) {
            Ok(()) => {
                tracing::info!("container deleted");
                Response::ok()
            }
            Err(e) => {
                // The record is still on disk: keep serving it.
                self.container = Container::load(&self.paths.root, &self.id).ok();
                Response::error(format!("deleting container {}: {e}", self.id))
            }
        }
    }

    /// Send what can still be sent and remove the socket.
    fn leave(&mut self) {
        tracing::info!("exiting");
        for job in std::mem::take(&mut self.execs) {
            job.cancel();
        }
        for session in std::mem::take(&mut self.sessions) {
            session.end();
        }
        self.drop_finished_clients();
        if let Err(e) = std::fs::remove_file(&self.paths.socket) {
            tracing::warn!(error = %e, "removing the control socket");
        }
    }
}
