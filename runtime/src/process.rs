//! The last steps before `execve`, shared by a container's init and by processes exec'd into it:
//! resource limits, identity, capabilities, working directory, and finding the program.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType, Process};

use crate::capabilities;
use crate::error::{Context, Error, Result};
use crate::seccomp::SeccompFilter;

fn resource(kind: PosixRlimitType) -> Resource {
    match kind {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

/// Apply the spec's rlimits. Raising a hard limit needs CAP_SYS_RESOURCE; where root lacks it
/// (as in some sandboxes) the limit is clamped to the current hard limit instead of failing the
/// container, and a warning says so.
pub fn apply_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for limit in rlimits {
        let res = resource(limit.typ());
        match setrlimit(res, limit.soft(), limit.hard()) {
            Ok(()) => {}
            Err(Errno::EPERM) => {
                let (_, current_hard) =
                    getrlimit(res).context(|| format!("reading {:?}", limit.typ()))?;
                let hard = limit.hard().min(current_hard);
                let soft = limit.soft().min(hard);
                tracing::warn!(
                    rlimit = ?limit.typ(),
                    wanted = limit.hard(),
                    got = hard,
                    "cannot raise a hard rlimit without CAP_SYS_RESOURCE; clamped"
                );
                setrlimit(res, soft, hard).context(|| format!("setting {:?}", limit.typ()))?;
            }
            Err(e) => return Err(e).context(|| format!("setting {:?}", limit.typ())),
        }
    }
    Ok(())
}

/// Set oom_score_adj. Lowering it below the current value needs CAP_SYS_RESOURCE; without it the
/// current value is kept (as containerd's restrict_oom_score_adj would) rather than failing.
pub fn set_oom_score_adj(value: i32) -> Result<()> {
    match std::fs::write("/proc/self/oom_score_adj", value.to_string()) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) =>
        {
            tracing::warn!(
                value,
                "cannot lower oom_score_adj without CAP_SYS_RESOURCE; kept the inherited value"
            );
            Ok(())
        }
        Err(e) => Err(e).context(|| "setting oom_score_adj".into()),
    }
}

/// Become the spec's user with the spec's capabilities.
pub fn switch_identity(process: &Process) -> Result<()> {
    let caps = process.capabilities().as_ref();
    capabilities::drop_bounding(caps)?;
    // Keep the permitted set across the setuid below; capabilities::apply then trims it.
    nix::sys::prctl::set_keepcaps(true).context(|| "PR_SET_KEEPCAPS".into())?;
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    setgroups(&groups).context(|| "setting supplementary groups".into())?;
    let gid = Gid::from_raw(user.gid());
    setresgid(gid, gid, gid).context(|| format!("setting gid {gid}"))?;
    let uid = Uid::from_raw(user.uid());
    setresuid(uid, uid, uid).context(|| format!("setting uid {uid}"))?;
    nix::sys::prctl::set_keepcaps(false).context(|| "PR_SET_KEEPCAPS".into())?;
    capabilities::apply(caps)?;
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().context(|| "PR_SET_NO_NEW_PRIVS".into())
}

/// The steps shared by a container's init and an exec'd process, from the console to the
/// program, in the order the kernel's permission rules force: rlimits while still privileged;
/// seccomp early when no_new_privs is off (loading then needs CAP_SYS_ADMIN, which the user switch
/// drops); capabilities and user; the working directory as the new user. Returns the program and
/// the filter still to load, which should happen as late as possible, right before execve.
pub fn become_process(
    process: &Process,
    console: Option<&std::os::unix::net::UnixStream>,
    seccomp: Option<SeccompFilter>,
) -> Result<(Program, Option<SeccompFilter>)> {
    if let Some(socket) = console {
        let size = process
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16));
        crate::console::setup(socket, size)?;
    }
    apply_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    let late_seccomp = match seccomp {
        Some(filter) if !no_new_privs => {
            filter.load()?;
            None
        }
        other => other,
    };
    if no_new_privs {
        set_no_new_privs()?;
    }
    switch_identity(process)?;
    nix::unistd::chdir(process.cwd())
        .context(|| format!("entering working directory {}", process.cwd().display()))?;
    Ok((Program::prepare(process)?, late_seccomp))
}

/// What execve needs, prepared before the point of no return so that a missing program is
/// reported as an error of `create`/`exec` rather than a silent exit.
#[derive(Debug)]
pub struct Program {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
}

impl Program {
    pub fn prepare(process: &Process) -> Result<Self> {
        let args = process.args().clone().unwrap_or_default();
        let env = process.env().clone().unwrap_or_default();
        let first = args
            .first()
            .ok_or_else(|| Error::Child("process.args is empty".into()))?;
        let path = find_executable(first, &env)?;
        let cstr = |s: &str| {
            CString::new(s).map_err(|_| Error::Child(format!("{s:?} contains a NUL byte")))
        };
        Ok(Program {
            path: CString::new(path.as_os_str().as_bytes())
                .map_err(|_| Error::Child("program path contains a NUL byte".into()))?,
            args: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
            env: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
        })
    }

    /// Replace this process with the program; returns only on failure.
    pub fn exec(&self) -> Error {
        reset_signals();
        match nix::unistd::execve(&self.path, &self.args, &self.env) {
            Err(e) => Error::Sys {
                context: format!("executing {:?}", self.path),
                source: e,
            },
        }
    }
}

/// Look `name` up the way execvp would, in the container's PATH.
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf> {
    if name.contains('/') {
        return check_executable(Path::new(name));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if check_executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(Error::Child(format!(
        "executable {name:?} not found in $PATH ({path})"
    )))
}

fn check_executable(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Child(format!("executable {}: {e}", path.display())))?;
    if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::Child(format!(
            "{} is not an executable file",
            path.display()
        )));
    }
    Ok(path.to_path_buf())
}

/// Give the program default signal handling. execve keeps ignored signals and the signal mask,
/// and Rust's runtime ignores SIGPIPE: without this a container's `yes | head` would never end.
fn reset_signals() {
    // The raw syscall, because glibc refuses to touch the two real-time signals it reserves
    // (32 and 33), which a parent may still have left ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: the struct matches the kernel's sigaction layout for rt_sigaction with an
        // 8-byte mask; SIG_DFL runs no code of ours.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}
