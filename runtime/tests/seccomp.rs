//! Seccomp filters loaded in forked children, whose exit status tells what happened.
//! The profiles are written as JSON, exactly as they appear in an OCI config.json.

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::LinuxSeccomp;
use peapod_runtime::seccomp::{SeccompError, SeccompFilter};

fn profile(json: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(json).unwrap()
}

/// Exit code of a child whose filter could not be loaded.
const LOAD_FAILED: i32 = 100;

/// Loads `filter` in a forked child, runs `body` there and returns how the child ended.
/// The filter is compiled by the caller, before the fork, so that the child does little
/// more than the seccomp(2) call and the syscalls under test.
fn run_filtered(filter: SeccompFilter, body: fn() -> i32) -> WaitStatus {
    // SAFETY: the child only loads the filter, makes raw syscalls and _exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = match filter.load() {
                Ok(()) => body(),
                Err(_) => LOAD_FAILED,
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => waitpid(child, None).unwrap(),
    }
}

fn exited_ok(status: WaitStatus) {
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "child ended with {status:?}"
    );
}

/// 0 if the raw syscall failed with `errno`, 1 if it succeeded, 2 for another error.
fn fails_with(result: libc::c_long, errno: i32) -> i32 {
    match (result, Errno::last_raw()) {
        (-1, e) if e == errno => 0,
        (-1, _) => 2,
        _ => 1,
    }
}

fn getppid() -> libc::c_long {
    // SAFETY: getppid has no arguments and no side effects.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

fn personality(persona: libc::c_ulong) -> libc::c_long {
    // SAFETY: changes only the execution domain of this short-lived child.
    unsafe { libc::syscall(libc::SYS_personality, persona) }
}

fn getpriority(which: libc::c_long, who: libc::c_long) -> libc::c_long {
    // SAFETY: getpriority only reads.
    unsafe { libc::syscall(libc::SYS_getpriority, which, who) }
}

#[test]
fn errno_rules_return_eperm_or_errno_ret() {
    let filter = SeccompFilter::from_spec(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            { "names": ["getppid"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV },
        ]
    })))
    .unwrap();
    exited_ok(run_filtered(filter, || {
        fails_with(getppid(), libc::EPERM) + fails_with(getpriority(0, 0), libc::EXDEV)
    }));
}

#[test]
fn default_errno_ret_applies_to_unlisted_syscalls() {
    let filter = SeccompFilter::from_spec(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::ENOSYS,
        "syscalls": [
            { "names": ["exit", "exit_group", "brk", "mmap", "munmap", "madvise"], "action": "SCMP_ACT_ALLOW" },
        ]
    })))
    .unwrap();
    exited_ok(run_filtered(filter, || fails_with(getppid(), libc::ENOSYS)));
}

#[test]
fn kill_process_ends_the_child_with_sigsys() {
    let filter = SeccompFilter::from_spec(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [ { "names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS" } ]
    })))
    .unwrap();
    let status = run_filtered(filter, || {
        getppid();
        0
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGSYS, _)),
        "child ended with {status:?}"
    );
}

#[test]
fn argument_conditions() {
    let filter = SeccompFilter::from_spec(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            // The same argument twice: either value is refused (OR).
            {
                "names": ["personality"], "action": "SCMP_ACT_ERRNO",
                "args": [
                    { "index": 0, "value": 8, "op": "SCMP_CMP_EQ" },
                    { "index": 0, "value": 9, "op": "SCMP_CMP_EQ" }
                ]
            },
            // Masked: any persona with 0x0400 in bits 8..11 is refused.
            {
                "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EXDEV,
                "args": [ { "index": 0, "value": 3840, "valueTwo": 1024, "op": "SCMP_CMP_MASKED_EQ" } ]
            },
            // Different arguments: both must match (AND).
            {
                "names": ["getpriority"], "action": "SCMP_ACT_ERRNO",
                "args": [
                    { "index": 0, "value": 0, "op": "SCMP_CMP_EQ" },
                    { "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }
                ]
            }
        ]
    })))
    .unwrap();
    exited_ok(run_filtered(filter, || {
        let query = 0xffff_ffff;
        let mut failures = 0;
        failures += fails_with(personality(8), libc::EPERM);
        failures += fails_with(personality(9), libc::EPERM);
        failures += fails_with(personality(0x0400), libc::EXDEV);
        failures += fails_with(personality(0x0403), libc::EXDEV);
        failures += i32::from(personality(query) == -1);
        failures += i32::from(personality(0) == -1);
        failures += fails_with(getpriority(0, 0), libc::EPERM);
        // SAFETY: getpid has no side effects.
        let me = libc::c_long::from(unsafe { libc::getpid() });
        failures += i32::from(getpriority(0, me) == -1 && Errno::last_raw() == libc::EPERM);
        failures += i32::from(getpriority(1, 0) == -1 && Errno::last_raw() == libc::EPERM);
        failures
    }));
}

#[test]
fn unknown_syscall_names_are_skipped() {
    let filter = SeccompFilter::from_spec(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [ { "names": ["peapod_no_such_syscall", "getppid"], "action": "SCMP_ACT_ERRNO" } ]
    })))
    .unwrap();
    exited_ok(run_filtered(filter, || fails_with(getppid(), libc::EPERM)));
}

#[test]
fn rules_with_the_default_action_are_skipped() {
    let filter = SeccompFilter::from_spec(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "syscalls": [
            { "names": ["getppid"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM },
        ]
    })));
    assert!(filter.is_ok(), "{:?}", filter.err());
}

#[test]
fn notify_is_refused_clearly() {
    for json in [
        serde_json::json!({ "defaultAction": "SCMP_ACT_NOTIFY" }),
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [ { "names": ["getppid"], "action": "SCMP_ACT_NOTIFY" } ]
        }),
    ] {
        let err = SeccompFilter::from_spec(&profile(json)).unwrap_err();
        assert!(matches!(err, SeccompError::NotifyUnsupported), "{err}");
        assert!(err.to_string().contains("not supported"));
    }
}

#[test]
fn invalid_profiles_are_refused() {
    let bad_index = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [ { "names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                        "args": [ { "index": 6, "value": 0, "op": "SCMP_CMP_EQ" } ] } ]
    }));
    assert!(matches!(
        SeccompFilter::from_spec(&bad_index),
        Err(SeccompError::ArgumentIndex { index: 6, .. })
    ));
    let bad_errno = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000
    }));
    assert!(matches!(
        SeccompFilter::from_spec(&bad_errno),
        Err(SeccompError::ErrnoOutOfRange(70000))
    ));
}

/// Architectures and flags as the kubelet's RuntimeDefault profile carries them; the
/// filter neither sets no_new_privs itself nor needs it (the test runs as root).
#[test]
fn architectures_flags_and_no_new_privs() {
    let architectures = if cfg!(target_arch = "aarch64") {
        serde_json::json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    } else {
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    };
    let spec = profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures,
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [ { "names": ["getppid"], "action": "SCMP_ACT_ERRNO" } ]
    }));

    exited_ok(run_filtered(
        SeccompFilter::from_spec(&spec).unwrap(),
        || {
            // SAFETY: prctl(PR_GET_NO_NEW_PRIVS) only reads.
            let nnp = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
            fails_with(getppid(), libc::EPERM) + nnp
        },
    ));

    // With no_new_privs already set (process.noNewPrivileges) loading works the same.
    let filter = SeccompFilter::from_spec(&spec).unwrap();
    // SAFETY: the child sets no_new_privs, then loads the filter as run_filtered does.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) affects only this child.
            let code = if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                3
            } else if filter.load().is_err() {
                LOAD_FAILED
            } else {
                fails_with(getppid(), libc::EPERM)
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => exited_ok(waitpid(child, None).unwrap()),
    }
}
