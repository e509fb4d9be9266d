//! cgroup v1: one directory per mounted hierarchy, controller files with v1 names.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxNetwork, LinuxResources,
};

use super::mountinfo::CgroupMount;
use super::{files, wait_until, CgroupError, CgroupStats, CgroupVersion, FREEZE_TIMEOUT};

/// v1 reports "no limit" as the largest page-aligned counter value (9223372036854771712
/// on 4 KiB pages); anything this large is no limit.
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

#[derive(Debug, Clone)]
struct HierarchyDir {
    mount: CgroupMount,
    /// The cgroup's directory inside this hierarchy.
    dir: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct V1Cgroup {
    name: String,
    relative: PathBuf,
    hierarchies: Vec<HierarchyDir>,
}

impl V1Cgroup {
    pub fn new(name: &str, relative: &Path, mounts: Vec<CgroupMount>) -> Self {
        let hierarchies = mounts
            .into_iter()
            .map(|mount| HierarchyDir {
                dir: mount.mountpoint.join(relative),
                mount,
            })
            .collect();
        Self {
            name: name.to_string(),
            relative: relative.to_path_buf(),
            hierarchies,
        }
    }

    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.hierarchies.iter().map(|h| h.dir.as_path())
    }

    /// The cgroup's directory in the hierarchy that carries `controller`.
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.mount.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    fn require(&self, controller: &'static str) -> Result<&Path, CgroupError> {
        self.dir_of(controller)
            .ok_or_else(|| CgroupError::ControllerMissing {
                controller,
                cgroup: self.name.clone(),
            })
    }

    /// For limits a cluster can live without: warn and carry on.
    fn optional(&self, controller: &'static str) -> Option<&Path> {
        let dir = self.dir_of(controller);
        if dir.is_none() {
            tracing::warn!(cgroup = %self.name, controller, "controller not mounted, its limits are ignored");
        }
        dir
    }

    pub fn create(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            let is_cpuset = h.mount.controllers.iter().any(|c| c == "cpuset");
            let mut parent = h.mount.mountpoint.clone();
            for level in files::levels(&h.mount.mountpoint, &self.relative) {
                files::create_dir(&level)?;
                if is_cpuset {
                    // A new cpuset starts with no CPUs and no memory nodes, and joining
                    // it fails until both are set: inherit them from the parent.
                    inherit_cpuset(&parent, &level)?;
                }
                parent = level;
            }
        }
        Ok(())
    }

    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            files::write(&h.dir, "cgroup.procs", pid)?;
        }
        Ok(())
    }

    /// The calling thread into every hierarchy, through `tasks` (see `Cgroup::add_self`).
    pub fn add_self(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            files::write(&h.dir, "tasks", 0)?;
        }
        Ok(())
    }

    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if let Some(cpu) = resources.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(memory) = resources.memory() {
            self.apply_memory(memory)?;
        }
        if let Some(pids) = resources.pids() {
            // 0 leaves the limit untouched, a negative value removes it (as runc does).
            if pids.limit() != 0 {
                let dir = self.require("pids")?;
                let value = if pids.limit() > 0 {
                    pids.limit().to_string()
                } else {
                    "max".to_string()
                };
                files::write(dir, "pids.max", value)?;
            }
        }
        if let Some(block_io) = resources.block_io() {
            self.apply_block_io(block_io)?;
        }
        if let Some(limits) = resources
            .hugepage_limits()
            .as_deref()
            .filter(|l| !l.is_empty())
        {
            if let Some(dir) = self.optional("hugetlb") {
                for limit in limits {
                    let file = format!("hugetlb.{}.limit_in_bytes", limit.page_size());
                    if !files::write_if_exists(dir, &file, limit.limit())? {
                        tracing::warn!(cgroup = %self.name, page_size = %limit.page_size(), "huge page size not supported, limit ignored");
                    }
                }
            }
        }
        if let Some(network) = resources.network() {
            self.apply_network(network)?;
        }
        if let Some(rdma) = resources.rdma().as_ref().filter(|r| !r.is_empty()) {
            if let Some(dir) = self.optional("rdma") {
                for (device, limit) in rdma {
                    files::write(dir, "rdma.max", super::v2::rdma_line(device, limit))?;
                }
            }
        }
        if let Some(devices) = resources.devices().as_deref().filter(|d| !d.is_empty()) {
            if let Some(dir) = self.optional("devices") {
                apply_devices(dir, devices)?;
            }
        }
        if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::Unsupported {
                what: "linux.resources.unified",
                version: CgroupVersion::V1,
            });
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &LinuxCpu) -> Result<(), CgroupError> {
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            let dir = self.require("cpuset")?;
            if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
                files::write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
                files::write(dir, "cpuset.mems", mems)?;
            }
        }

        let wants_cpu = cpu.shares().is_some_and(|s| s != 0)
            || cpu.quota().is_some_and(|q| q != 0)
            || cpu.period().is_some_and(|p| p != 0)
            || cpu.burst().is_some()
            || cpu.idle().is_some()
            || cpu.realtime_period().is_some_and(|p| p != 0)
            || cpu.realtime_runtime().is_some_and(|r| r != 0);
        if !wants_cpu {
            return Ok(());
        }
        let dir = self.require("cpu")?;
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            files::write(dir, "cpu.shares", shares)?;
        }
        let period = cpu.period().filter(|p| *p != 0);
        let quota = cpu.quota().filter(|q| *q != 0);
        match (period, quota) {
            (Some(period), Some(quota)) => {
                // The kernel checks quota/period against the parent after each write, so
                // one order can fail where the other succeeds.
                if files::write(dir, "cpu.cfs_period_us", period).is_err() {
                    files::write(dir, "cpu.cfs_quota_us", quota)?;
                    files::write(dir, "cpu.cfs_period_us", period)?;
                } else {
                    files::write(dir, "cpu.cfs_quota_us", quota)?;
                }
            }
            (Some(period), None) => files::write(dir, "cpu.cfs_period_us", period)?,
            (None, Some(quota)) => files::write(dir, "cpu.cfs_quota_us", quota)?,
            (None, None) => {}
        }
        if let Some(burst) = cpu.burst() {
            if !files::write_if_exists(dir, "cpu.cfs_burst_us", burst)? {
                tracing::warn!(cgroup = %self.name, "cpu.cfs_burst_us not supported by this kernel, burst ignored");
            }
        }
        if let Some(idle) = cpu.idle() {
            files::write(dir, "cpu.idle", idle)?;
        }
        // The realtime period must be set before a runtime that only fits the new period.
        if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
            files::write(dir, "cpu.rt_period_us", period)?;
        }
        if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
            files::write(dir, "cpu.rt_runtime_us", runtime)?;
        }
        Ok(())
    }

    fn apply_memory(&self, memory: &LinuxMemory) -> Result<(), CgroupError> {
        // kernel and kernelTCP limits are deprecated (and gone in Linux 6.x): ignored, as runc does.
        let dir = self.require("memory")?;
        let limit = memory.limit().unwrap_or(0);
        let mut swap = memory.swap().unwrap_or(0);
        // Unlimited memory with swap left unset means unlimited swap too.
        if limit == -1 && swap == 0 {
            swap = -1;
        }
        if swap != 0 && !dir.join("memory.memsw.limit_in_bytes").exists() {
            tracing::warn!(cgroup = %self.name, "swap accounting is off (no memory.memsw.limit_in_bytes), swap limit ignored");
            swap = 0;
        }
        // The kernel requires memory <= memory+swap after every write, so the order
        // depends on whether the limits grow or shrink.
        let swap_first = limit != 0
            && swap != 0
            && (swap == -1 || files::read_u64(dir, "memory.limit_in_bytes")? < swap as u64);
        if swap_first {
            files::write(dir, "memory.memsw.limit_in_bytes", swap)?;
        }
        if limit != 0 {
            files::write(dir, "memory.limit_in_bytes", limit)?;
        }
        if swap != 0 && !swap_first {
            files::write(dir, "memory.memsw.limit_in_bytes", swap)?;
        }

        if let Some(reservation) = memory.reservation() {
            files::write(dir, "memory.soft_limit_in_bytes", reservation)?;
        }
        if let Some(swappiness) = memory.swappiness() {
            if swappiness > 100 {
                return Err(CgroupError::InvalidResources {
                    cgroup: self.name.clone(),
                    reason: format!("memory swappiness {swappiness} is not within 0..=100"),
                });
            }
            files::write(dir, "memory.swappiness", swappiness)?;
        }
        if memory.disable_oom_killer() == Some(true) {
            files::write(dir, "memory.oom_control", 1)?;
        }
        Ok(())
    }

    fn apply_block_io(&self, block_io: &LinuxBlockIo) -> Result<(), CgroupError> {
        let Some(dir) = self.optional("blkio") else {
            return Ok(());
        };
        // With the BFQ scheduler only the blkio.bfq.* weight files exist.
        let weight_file = |plain: &'static str, bfq: &'static str| {
            if dir.join(plain).exists() {
                plain
            } else {
                bfq
            }
        };
        if let Some(weight) = block_io.weight() {
            files::write(dir, weight_file("blkio.weight", "blkio.bfq.weight"), weight)?;
        }
        if let Some(leaf_weight) = block_io.leaf_weight() {
            if !files::write_if_exists(dir, "blkio.leaf_weight", leaf_weight)? {
                tracing::warn!(cgroup = %self.name, "blkio.leaf_weight not supported, ignored");
            }
        }
        for device in block_io.weight_device().iter().flatten() {
            if let Some(weight) = device.weight() {
                let file = weight_file("blkio.weight_device", "blkio.bfq.weight_device");
                let line = format!("{}:{} {}", device.major(), device.minor(), weight);
                files::write(dir, file, line)?;
            }
            if let Some(leaf_weight) = device.leaf_weight() {
                let line = format!("{}:{} {}", device.major(), device.minor(), leaf_weight);
                if !files::write_if_exists(dir, "blkio.leaf_weight_device", line)? {
                    tracing::warn!(cgroup = %self.name, "blkio.leaf_weight_device not supported, ignored");
                }
            }
        }
        let throttles = [
            (
                "blkio.throttle.read_bps_device",
                block_io.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                block_io.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                block_io.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                block_io.throttle_write_iops_device(),
            ),
        ];
        for (file, devices) in throttles {
            for device in devices.iter().flatten() {
                let line = format!("{}:{} {}", device.major(), device.minor(), device.rate());
                files::write(dir, file, line)?;
            }
        }
        Ok(())
    }

    fn apply_network(&self, network: &LinuxNetwork) -> Result<(), CgroupError> {
        if let Some(class_id) = network.class_id() {
            if let Some(dir) = self.optional("net_cls") {
                files::write(dir, "net_cls.classid", class_id)?;
            }
        }
        if let Some(priorities) = network.priorities().as_deref().filter(|p| !p.is_empty()) {
            if let Some(dir) = self.optional("net_prio") {
                for prio in priorities {
                    let line = format!("{} {}", prio.name(), prio.priority());
                    files::write(dir, "net_prio.ifpriomap", line)?;
                }
            }
        }
        Ok(())
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        let dir = self.require("freezer")?;
        files::write(dir, "freezer.state", "FROZEN")?;
        let mut polls = 0u32;
        let (frozen, state) = wait_until(FREEZE_TIMEOUT, || {
            let state = files::read(dir, "freezer.state")?.trim().to_string();
            polls += 1;
            // A task that forks while the cgroup is FREEZING can keep it there;
            // asking again freezes the latecomers (runc does the same).
            if state == "FREEZING" && polls.is_multiple_of(10) {
                files::write(dir, "freezer.state", "FROZEN")?;
            }
            Ok((state == "FROZEN", state))
        })?;
        if frozen {
            return Ok(());
        }
        self.thaw()?;
        Err(CgroupError::FreezeTimeout {
            path: dir.to_path_buf(),
            state,
        })
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        files::write(self.require("freezer")?, "freezer.state", "THAWED")
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let state = files::read(self.require("freezer")?, "freezer.state")?;
        Ok(state.trim() == "FROZEN")
    }

    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let mut stats = CgroupStats::default();

        if let Some(dir) = self.dir_of("cpuacct") {
            stats.cpu_usage_ns = files::read_u64(dir, "cpuacct.usage")?;
            match (
                files::read_optional(dir, "cpuacct.usage_user")?,
                files::read_optional(dir, "cpuacct.usage_sys")?,
            ) {
                (Some(user), Some(sys)) => {
                    stats.cpu_user_ns = parse_ns(dir, "cpuacct.usage_user", &user)?;
                    stats.cpu_system_ns = parse_ns(dir, "cpuacct.usage_sys", &sys)?;
                }
                // Kernels before 4.7 only have cpuacct.stat, in clock ticks.
                _ => {
                    let stat = files::read(dir, "cpuacct.stat")?;
                    let ns_per_tick = nanoseconds_per_tick();
                    stats.cpu_user_ns =
                        files::keyed_value(&stat, "user").unwrap_or(0) * ns_per_tick;
                    stats.cpu_system_ns =
                        files::keyed_value(&stat, "system").unwrap_or(0) * ns_per_tick;
                }
            }
        }

        if let Some(dir) = self.dir_of("memory") {
            stats.memory_usage_bytes = files::read_u64(dir, "memory.usage_in_bytes")?;
            stats.memory_max_usage_bytes = files::read_u64(dir, "memory.max_usage_in_bytes")?;
            let limit = files::read_u64(dir, "memory.limit_in_bytes")?;
            stats.memory_limit_bytes = (limit < UNLIMITED_THRESHOLD).then_some(limit);
            let stat = files::read(dir, "memory.stat")?;
            // The total_* figures include sub-cgroups.
            let value = |key: &str| {
                files::keyed_value(&stat, &format!("total_{key}"))
                    .or_else(|| files::keyed_value(&stat, key))
                    .unwrap_or(0)
            };
            stats.memory_rss_bytes = value("rss");
            stats.memory_cache_bytes = value("cache");
            stats.memory_working_set_bytes = stats
                .memory_usage_bytes
                .saturating_sub(value("inactive_file"));
            stats.oom_kills = self.oom_kills()?;
        }

        if let Some(dir) = self.dir_of("pids") {
            stats.pids_current = files::read_u64(dir, "pids.current")?;
            stats.pids_limit = files::read_limit(dir, "pids.max")?;
        }
        Ok(stats)
    }

    /// v1 counts an OOM kill only in the victim's own cgroup, so sub-cgroups are summed.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let dir = self.require("memory")?;
        let mut kills = 0;
        for cgroup in files::cgroup_tree(dir)? {
            let control = files::read(&cgroup, "memory.oom_control")?;
            match files::keyed_value(&control, "oom_kill") {
                Some(n) => kills += n,
                None => {
                    tracing::warn!(path = %cgroup.display(), "memory.oom_control has no oom_kill counter (kernel older than 4.13)");
                }
            }
        }
        Ok(kills)
    }
}

/// Copies cpuset.cpus and cpuset.mems from `parent` into `dir` where they are empty.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if files::read(dir, file)?.trim().is_empty() {
            files::write(dir, file, files::read(parent, file)?.trim())?;
        }
    }
    Ok(())
}

/// Writes the OCI device rules, in order, to devices.allow / devices.deny. The usual
/// spec starts with "deny all" ("a *:* rwm"), which resets the list, then allows.
/// (Unlike runc we do not compute a minimal transition, so an `update` of a running
/// container briefly denies everything between the reset and the allows.)
fn apply_devices(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    for rule in rules {
        let number = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let line = format!(
            "{} {}:{} {}",
            rule.typ().unwrap_or_default().as_str(),
            number(rule.major()),
            number(rule.minor()),
            rule.access()
                .as_deref()
                .filter(|a| !a.is_empty())
                .unwrap_or("rwm"),
        );
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        files::write(dir, file, line)?;
    }
    Ok(())
}

fn parse_ns(dir: &Path, file: &str, content: &str) -> Result<u64, CgroupError> {
    content
        .trim()
        .parse()
        .map_err(|_| files::parse_error(dir, file, content))
}

fn nanoseconds_per_tick() -> u64 {
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    1_000_000_000 / ticks_per_second as u64
}

#[cfg(test)]
mod tests {
    use std::fs;

    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder,
        LinuxMemoryBuilder, LinuxResourcesBuilder,
    };

    use super::*;
    use crate::cgroups::{Cgroup, Layout};

    /// Mountpoint name, its controllers, and interface files with their contents.
    type FakeHierarchy = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
    );

    /// Fake v1 hierarchies in `root`, with the files the kernel would create in the
    /// cgroup "pod/ctr". Memory has no memsw files: swap accounting is off.
    fn fake_hierarchies(root: &Path) -> Vec<CgroupMount> {
        let hierarchies: [FakeHierarchy; 4] = [
            (
                "cpu,cpuacct",
                &["cpu", "cpuacct"],
                &[
                    ("cpu.shares", "1024"),
                    ("cpu.cfs_quota_us", "-1"),
                    ("cpu.cfs_period_us", "100000"),
                ],
            ),
            (
                "cpuset",
                &["cpuset"],
                &[("cpuset.cpus", ""), ("cpuset.mems", "")],
            ),
            (
                "memory",
                &["memory"],
                &[
                    ("memory.limit_in_bytes", "9223372036854771712"),
                    ("memory.soft_limit_in_bytes", "9223372036854771712"),
                    ("memory.swappiness", "60"),
                ],
            ),
            (
                "devices",
                &["devices"],
                &[("devices.allow", ""), ("devices.deny", "")],
            ),
        ];
        let mut mounts = Vec::new();
        for (name, controllers, interface_files) in hierarchies {
            let mountpoint = root.join(name);
            for dir in [mountpoint.join("pod"), mountpoint.join("pod/ctr")] {
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join("cgroup.procs"), "").unwrap();
                for (file, content) in interface_files {
                    fs::write(dir.join(file), content).unwrap();
                }
            }
            mounts.push(CgroupMount {
                mountpoint,
                fstype: "cgroup".to_string(),
                controllers: controllers.iter().map(|c| c.to_string()).collect(),
            });
        }
        fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(root.join("cpuset/cpuset.mems"), "0\n").unwrap();
        mounts
    }

    #[test]
    fn writes_v1_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let cgroup = Cgroup::with_layout("/pod/ctr", Layout::V1(fake_hierarchies(root))).unwrap();
        cgroup.create().unwrap();
        let read = |f: &str| fs::read_to_string(root.join(f)).unwrap();
        // The new cpusets inherited the root's CPUs and memory nodes, level by level.
        assert_eq!(read("cpuset/pod/cpuset.cpus"), "0-1");
        assert_eq!(read("cpuset/pod/ctr/cpuset.mems"), "0");

        let resources = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(256u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(128i64 << 20)
                    .swappiness(10u64)
                    .build()
                    .unwrap(),
            )
            .devices(vec![
                LinuxDeviceCgroupBuilder::default()
                    .allow(false)
                    .access("rwm")
                    .build()
                    .unwrap(),
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(1i64)
                    .minor(3i64)
                    .access("rw")
                    .build()
                    .unwrap(),
            ])
            // No hugetlb hierarchy here: ignored with a warning.
            .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(0i64)
                .build()
                .unwrap()])
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();

        assert_eq!(read("cpu,cpuacct/pod/ctr/cpu.shares"), "256");
        assert_eq!(read("cpu,cpuacct/pod/ctr/cpu.cfs_quota_us"), "50000");
        // Swap accounting is off: the swap limit is skipped, the memory limit is set.
        assert_eq!(
            read("memory/pod/ctr/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert!(!root
            .join("memory/pod/ctr/memory.memsw.limit_in_bytes")
            .exists());
        assert_eq!(read("memory/pod/ctr/memory.swappiness"), "10");
        assert_eq!(read("devices/pod/ctr/devices.deny"), "a *:* rwm");
        assert_eq!(read("devices/pod/ctr/devices.allow"), "c 1:3 rw");

        let too_swappy = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .swappiness(101u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(matches!(
            cgroup.apply(&too_swappy),
            Err(CgroupError::InvalidResources { .. })
        ));

        // A controller the spec needs but the host lacks is an error that names it.
        let pids = LinuxResourcesBuilder::default()
            .pids(
                oci_spec::runtime::LinuxPidsBuilder::default()
                    .limit(5i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let err = cgroup.apply(&pids).unwrap_err();
        assert!(err.to_string().contains("pids controller"), "{err}");

        cgroup.add_process(42).unwrap();
        assert_eq!(read("memory/pod/ctr/cgroup.procs"), "42");
        assert_eq!(read("cpuset/pod/ctr/cgroup.procs"), "42");
    }
}
