//! Seccomp: turns the OCI spec's `linux.seccomp` into a BPF filter with libseccomp.
//!
//! The filter is compiled early (while the container process still sees the host's
//! files, before `pivot_root`) and loaded as late as possible, right before `execve`,
//! so that the runtime's own set-up syscalls are not subject to it.
//!
//! The translation follows runc's so that existing profiles (Docker's default profile,
//! the kubelet's `RuntimeDefault`) behave identically:
//! - syscall names libseccomp does not know are skipped (profiles list syscalls of
//!   newer kernels and other architectures);
//! - a rule whose action equals the default action is not added (libseccomp refuses it);
//! - conditions on distinct arguments are ANDed in a single rule, but when one argument
//!   index appears more than once each condition becomes its own rule (ORed), because a
//!   single libseccomp rule cannot test one argument twice.
//!
//! `no_new_privs` is never set here: libseccomp would set it by default, but the OCI spec
//! makes it the job of `process.noNewPrivileges`. Without it, loading a filter requires
//! CAP_SYS_ADMIN, which the container process still holds at that point.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};

/// The number of arguments a syscall can have, and so the bound for `args[].index`.
const SYSCALL_MAX_ARGS: usize = 6;

/// Why a seccomp profile could not be compiled or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "seccomp action SCMP_ACT_NOTIFY is not supported: peapod has no seccomp notify listener"
    )]
    NotifyUnsupported,
    #[error("seccomp architecture {0:?} is not supported by this build of libseccomp: {1}")]
    Architecture(Arch, #[source] libseccomp::error::SeccompError),
    #[error("seccomp flag {flag} could not be set: {source}")]
    Flag {
        flag: LinuxSeccompFilterFlag,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp errno value {0} is out of range (at most 65535)")]
    ErrnoOutOfRange(u32),
    #[error("seccomp rule for {syscall:?} tests argument {index}, but syscalls have only {SYSCALL_MAX_ARGS} arguments")]
    ArgumentIndex { syscall: String, index: usize },
    #[error("seccomp rule for {syscall:?} with action {action} could not be added: {source}")]
    AddRule {
        syscall: String,
        action: LinuxSeccompAction,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp filter could not be created: {0}")]
    Create(#[source] libseccomp::error::SeccompError),
    #[error("seccomp filter could not be loaded into the kernel: {0}")]
    Load(#[source] libseccomp::error::SeccompError),
}

/// A filter compiled from the OCI spec's `linux.seccomp`, built before `pivot_root`
/// and loaded as late as possible (right before `execve`).
#[derive(Debug)]
pub struct SeccompFilter {
    context: ScmpFilterContext,
}

impl SeccompFilter {
    /// Compiles the profile. Nothing is loaded into the kernel yet.
    pub fn from_spec(seccomp: &LinuxSeccomp) -> Result<Self, SeccompError> {
        let default_action = to_scmp_action(seccomp.default_action(), seccomp.default_errno_ret())?;
        let mut context = ScmpFilterContext::new(default_action).map_err(SeccompError::Create)?;
        // OCI's process.noNewPrivileges decides about no_new_privs, not the seccomp profile.
        context.set_ctl_nnp(false).map_err(SeccompError::Create)?;

        for arch in seccomp.architectures().iter().flatten() {
            context
                .add_arch(to_scmp_arch(*arch))
                .map_err(|e| SeccompError::Architecture(*arch, e))?;
        }
        for flag in seccomp.flags().iter().flatten() {
            set_flag(&mut context, *flag)?;
        }
        for syscall in seccomp.syscalls().iter().flatten() {
            add_syscall_rules(&mut context, syscall, default_action)?;
        }
        Ok(Self { context })
    }

    /// Loads the filter into the kernel for the calling thread (all threads with
    /// SECCOMP_FILTER_FLAG_TSYNC). After this no filter can be removed, and with a
    /// restrictive profile hardly any set-up work is possible: call it right before exec.
    pub fn load(self) -> Result<(), SeccompError> {
        self.context.load().map_err(SeccompError::Load)
    }
}

fn set_flag(
    context: &mut ScmpFilterContext,
    flag: LinuxSeccompFilterFlag,
) -> Result<(), SeccompError> {
    let result = match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => context.set_ctl_log(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => context.set_ctl_ssb(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => context.set_ctl_tsync(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => context.set_ctl_waitkill(true),
    };
    result
        .map(|_| ())
        .map_err(|source| SeccompError::Flag { flag, source })
}

/// Adds the rules of one `syscalls[]` entry: one rule per known syscall name.
fn add_syscall_rules(
    context: &mut ScmpFilterContext,
    syscall: &LinuxSyscall,
    default_action: ScmpAction,
) -> Result<(), SeccompError> {
    let action = to_scmp_action(syscall.action(), syscall.errno_ret())?;
    if action == default_action {
        tracing::debug!(names = ?syscall.names(), "seccomp rule has the default action, skipped");
        return Ok(());
    }
    let args = syscall.args().as_deref().unwrap_or_default();
    let condition_sets = condition_sets(args, syscall.names())?;

    for name in syscall.names() {
        let number = match ScmpSyscall::from_name(name) {
            Ok(number) => number,
            Err(_) => {
                tracing::debug!(syscall = %name, "syscall unknown to libseccomp, rule skipped");
                continue;
            }
        };
        for conditions in &condition_sets {
            context
                .add_rule_conditional(action, number, conditions)
                .map_err(|source| SeccompError::AddRule {
                    syscall: name.clone(),
                    action: syscall.action(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Groups the argument conditions into rules: one rule with all of them (AND) when each
/// argument is tested at most once, otherwise one rule per condition (OR), as runc does.
fn condition_sets(
    args: &[LinuxSeccompArg],
    names: &[String],
) -> Result<Vec<Vec<ScmpArgCompare>>, SeccompError> {
    let mut uses_per_index = [0usize; SYSCALL_MAX_ARGS];
    let mut conditions = Vec::with_capacity(args.len());
    for arg in args {
        let index = arg.index();
        let Some(uses) = uses_per_index.get_mut(index) else {
            return Err(SeccompError::ArgumentIndex {
                syscall: names.join(","),
                index,
            });
        };
        *uses += 1;
        conditions.push(to_scmp_condition(arg));
    }

    if uses_per_index.iter().any(|uses| *uses > 1) {
        Ok(conditions.into_iter().map(|c| vec![c]).collect())
    } else {
        // An empty condition list is an unconditional rule.
        Ok(vec![conditions])
    }
}

fn to_scmp_condition(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    // `index` was checked against SYSCALL_MAX_ARGS, so it fits in u32.
    let index = arg.index() as u32;
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // For MASKED_EQ the spec's `value` is the mask and `valueTwo` the expected result.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(
                index,
                ScmpCompareOp::MaskedEqual(arg.value()),
                arg.value_two().unwrap_or(0),
            );
        }
    };
    ScmpArgCompare::new(index, op, arg.value())
}

fn to_scmp_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
) -> Result<ScmpAction, SeccompError> {
    // ERRNO and TRACE carry a 16-bit value; EPERM is the spec's default.
    let ret = || -> Result<u16, SeccompError> {
        let value = errno_ret.unwrap_or(libc::EPERM as u32);
        u16::try_from(value).map_err(|_| SeccompError::ErrnoOutOfRange(value))
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(ret()?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::NotifyUnsupported),
    })
}

fn to_scmp_arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}
