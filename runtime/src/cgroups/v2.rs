//! cgroup v2: one directory in the unified tree; the parents must enable the
//! controllers for their children in cgroup.subtree_control.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxRdma, LinuxResources};

use super::{files, wait_until, CgroupError, CgroupStats, FREEZE_TIMEOUT};

/// cpu.shares range (v1) and cpu.weight range (v2).
const SHARES_MAX: u64 = 262_144;
const WEIGHT_MAX: u64 = 10_000;

#[derive(Debug, Clone)]
pub(crate) struct V2Cgroup {
    name: String,
    root: PathBuf,
    relative: PathBuf,
    dir: PathBuf,
}

impl V2Cgroup {
    pub fn new(name: &str, root: &Path, relative: &Path) -> Self {
        Self {
            name: name.to_string(),
            root: root.to_path_buf(),
            relative: relative.to_path_buf(),
            dir: root.join(relative),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates each level and, in every parent (the root included), enables all the
    /// controllers it has for its children. The cgroup itself enables none: it holds the
    /// container's processes, and v2 allows processes only in leaves.
    pub fn create(&self) -> Result<(), CgroupError> {
        let mut parent = self.root.clone();
        for level in files::levels(&self.root, &self.relative) {
            enable_subtree_controllers(&parent)?;
            files::create_dir(&level)?;
            parent = level;
        }
        Ok(())
    }

    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        files::write(&self.dir, "cgroup.procs", pid)
    }

    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let dir = &self.dir;
        if let Some(cpu) = resources.cpu() {
            self.apply_cpu(cpu)?;
        }
        if let Some(memory) = resources.memory() {
            self.apply_memory(memory)?;
        }
        if let Some(pids) = resources.pids() {
            // 0 leaves the limit untouched, a negative value removes it (as runc does).
            if pids.limit() != 0 {
                files::write(dir, "pids.max", limit_value(pids.limit()))?;
            }
        }
        if let Some(block_io) = resources.block_io() {
            self.apply_io(block_io)?;
        }
        for limit in resources.hugepage_limits().iter().flatten() {
            let file = format!("hugetlb.{}.max", limit.page_size());
            if !files::write_if_exists(dir, &file, limit.limit())? {
                tracing::warn!(cgroup = %self.name, page_size = %limit.page_size(), "hugetlb controller or page size not available, limit ignored");
            }
        }
        if resources.network().is_some() {
            tracing::warn!(cgroup = %self.name, "net_cls/net_prio do not exist on cgroup v2, network limits ignored");
        }
        for (device, limit) in resources.rdma().iter().flatten() {
            files::write(dir, "rdma.max", rdma_line(device, limit))?;
        }
        if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            // v2 controls devices with an eBPF program attached to the cgroup, which
            // peapod does not build; the container's /dev is still limited to the
            // devices the runtime creates in it.
            tracing::warn!(cgroup = %self.name, "device rules need eBPF on cgroup v2, not enforced");
        }
        // Verbatim values come last so that they win over the converted ones.
        for (key, value) in resources.unified().iter().flatten() {
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(CgroupError::InvalidResources {
                    cgroup: self.name.clone(),
                    reason: format!("unified key {key:?} is not a cgroup interface file name"),
                });
            }
            files::write(dir, key, value)?;
        }
        Ok(())
    }

    fn apply_cpu(&self, cpu: &LinuxCpu) -> Result<(), CgroupError> {
        let dir = &self.dir;
        if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
            files::write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
            files::write(dir, "cpuset.mems", mems)?;
        }
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            files::write(dir, "cpu.weight", shares_to_weight(shares))?;
        }
        let quota = cpu.quota().filter(|q| *q != 0);
        let period = cpu.period().filter(|p| *p != 0);
        if quota.is_some() || period.is_some() {
            // cpu.max is "$QUOTA $PERIOD"; keep the current quota when only the period changes.
            let quota = match quota {
                Some(q) if q > 0 => q.to_string(),
                Some(_) => "max".to_string(),
                None => files::read(dir, "cpu.max")?
                    .split_whitespace()
                    .next()
                    .unwrap_or("max")
                    .to_string(),
            };
            let value = match period {
                Some(period) => format!("{quota} {period}"),
                None => quota,
            };
            files::write(dir, "cpu.max", value)?;
        }
        if let Some(burst) = cpu.burst() {
            if !files::write_if_exists(dir, "cpu.max.burst", burst)? {
                tracing::warn!(cgroup = %self.name, "cpu.max.burst not supported by this kernel, burst ignored");
            }
        }
        if let Some(idle) = cpu.idle() {
            files::write(dir, "cpu.idle", idle)?;
        }
        if cpu.realtime_period().is_some_and(|p| p != 0)
            || cpu.realtime_runtime().is_some_and(|r| r != 0)
        {
            tracing::warn!(cgroup = %self.name, "realtime CPU limits do not exist on cgroup v2, ignored");
        }
        Ok(())
    }

    fn apply_memory(&self, memory: &LinuxMemory) -> Result<(), CgroupError> {
        let dir = &self.dir;
        let limit = memory.limit().unwrap_or(0);
        let swap = memory_swap_to_v2(memory.swap().unwrap_or(0), limit).map_err(|reason| {
            CgroupError::InvalidResources {
                cgroup: self.name.clone(),
                reason,
            }
        })?;
        // Unlike v1 the two limits are independent, so their order does not matter.
        if let Some(swap) = swap {
            if !files::write_if_exists(dir, "memory.swap.max", limit_value(swap))? {
                tracing::warn!(cgroup = %self.name, "swap accounting is off (no memory.swap.max), swap limit ignored");
            }
        }
        if limit != 0 {
            files::write(dir, "memory.max", limit_value(limit))?;
        }
        if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
            files::write(dir, "memory.low", limit_value(reservation))?;
        }
        if memory.swappiness().is_some() {
            tracing::warn!(cgroup = %self.name, "memory swappiness does not exist on cgroup v2, ignored");
        }
        if memory.disable_oom_killer() == Some(true) {
            tracing::warn!(cgroup = %self.name, "disabling the OOM killer is not possible on cgroup v2, ignored");
        }
        Ok(())
    }

    fn apply_io(&self, block_io: &LinuxBlockIo) -> Result<(), CgroupError> {
        let dir = &self.dir;
        // BFQ takes v1 weights (1..=1000) in io.bfq.weight; io.weight wants 1..=10000.
        let bfq = dir.join("io.bfq.weight").exists();
        if let Some(weight) = block_io.weight() {
            if bfq {
                files::write(dir, "io.bfq.weight", weight)?;
            } else {
                files::write(dir, "io.weight", blkio_weight_to_io_weight(weight))?;
            }
        }
        if block_io.leaf_weight().is_some() {
            tracing::warn!(cgroup = %self.name, "blkio leaf weights do not exist on cgroup v2, ignored");
        }
        for device in block_io.weight_device().iter().flatten() {
            if let Some(weight) = device.weight() {
                let (file, weight) = if bfq {
                    ("io.bfq.weight", u64::from(weight))
                } else {
                    ("io.weight", blkio_weight_to_io_weight(weight))
                };
                files::write(
                    dir,
                    file,
                    format!("{}:{} {}", device.major(), device.minor(), weight),
                )?;
            }
        }
        let throttles = [
            ("rbps", block_io.throttle_read_bps_device()),
            ("wbps", block_io.throttle_write_bps_device()),
            ("riops", block_io.throttle_read_iops_device()),
            ("wiops", block_io.throttle_write_iops_device()),
        ];
        for (key, devices) in throttles {
            for device in devices.iter().flatten() {
                let line = format!(
                    "{}:{} {}={}",
                    device.major(),
                    device.minor(),
                    key,
                    device.rate()
                );
                files::write(dir, "io.max", line)?;
            }
        }
        Ok(())
    }

    pub fn freeze(&self) -> Result<(), CgroupError> {
        files::write(&self.dir, "cgroup.freeze", 1)?;
        let (frozen, state) = wait_until(FREEZE_TIMEOUT, || {
            let frozen = self.is_frozen()?;
            Ok((frozen, format!("frozen {}", u8::from(frozen))))
        })?;
        if frozen {
            return Ok(());
        }
        self.thaw()?;
        Err(CgroupError::FreezeTimeout {
            path: self.dir.clone(),
            state,
        })
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        files::write(&self.dir, "cgroup.freeze", 0)
    }

    /// cgroup.freeze is what was asked; cgroup.events says whether it is done.
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let events = files::read(&self.dir, "cgroup.events")?;
        Ok(files::keyed_value(&events, "frozen") == Some(1))
    }

    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let dir = &self.dir;
        let mut stats = CgroupStats::default();

        // cpu.stat exists even without the cpu controller (usage only).
        let cpu = files::read(dir, "cpu.stat")?;
        let usec = |key| files::keyed_value(&cpu, key).unwrap_or(0) * 1000;
        stats.cpu_usage_ns = usec("usage_usec");
        stats.cpu_user_ns = usec("user_usec");
        stats.cpu_system_ns = usec("system_usec");

        if let Some(current) = files::read_optional(dir, "memory.current")? {
            stats.memory_usage_bytes = current
                .trim()
                .parse()
                .map_err(|_| files::parse_error(dir, "memory.current", &current))?;
            stats.memory_limit_bytes = files::read_limit(dir, "memory.max")?;
            // memory.peak appeared in Linux 5.19.
            if let Some(peak) = files::read_optional(dir, "memory.peak")? {
                stats.memory_max_usage_bytes = peak.trim().parse().unwrap_or(0);
            }
            let stat = files::read(dir, "memory.stat")?;
            let value = |key| files::keyed_value(&stat, key).unwrap_or(0);
            stats.memory_rss_bytes = value("anon");
            stats.memory_cache_bytes = value("file");
            stats.memory_working_set_bytes = stats
                .memory_usage_bytes
                .saturating_sub(value("inactive_file"));
            stats.oom_kills = self.oom_kills()?;
        }

        if let Some(current) = files::read_optional(dir, "pids.current")? {
            stats.pids_current = current
                .trim()
                .parse()
                .map_err(|_| files::parse_error(dir, "pids.current", &current))?;
            stats.pids_limit = files::read_limit(dir, "pids.max")?;
        }
        Ok(stats)
    }

    /// memory.events counts the kills in this cgroup and all below it.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        if self.dir.exists() && !self.dir.join("memory.events").exists() {
            return Err(CgroupError::ControllerMissing {
                controller: "memory",
                cgroup: self.name.clone(),
            });
        }
        let events = files::read(&self.dir, "memory.events")?;
        Ok(files::keyed_value(&events, "oom_kill").unwrap_or(0))
    }
}

/// Enables in `dir` every controller it has for its children. Each controller is enabled
/// on its own so that one that cannot be (e.g. a threaded-only one) does not block the rest.
fn enable_subtree_controllers(dir: &Path) -> Result<(), CgroupError> {
    let Some(available) = files::read_optional(dir, "cgroup.controllers")? else {
        return Ok(());
    };
    let enabled = files::read_optional(dir, "cgroup.subtree_control")?.unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    for controller in available.split_whitespace() {
        if enabled.contains(&controller) {
            continue;
        }
        if let Err(e) = files::write(dir, "cgroup.subtree_control", format!("+{controller}")) {
            tracing::warn!(error = %e, "could not enable a cgroup controller for children");
        }
    }
    Ok(())
}

/// "max" for a negative (unlimited) value.
fn limit_value(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// cpu.shares (2..=262144, default 1024) to cpu.weight (1..=10000, default 100), the
/// linear mapping runc and the kubelet use.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, SHARES_MAX);
    1 + (shares - 2) * (WEIGHT_MAX - 1) / (SHARES_MAX - 2)
}

/// blkio.weight (10..=1000) to io.weight (1..=10000).
fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * (WEIGHT_MAX - 1) / 990
}

/// The OCI swap field is memory+swap (v1 semantics); v2's memory.swap.max is swap alone.
/// `None` means leave memory.swap.max alone; -1 means unlimited.
pub(crate) fn memory_swap_to_v2(swap: i64, limit: i64) -> Result<Option<i64>, String> {
    match (swap, limit) {
        // Unlimited memory and swap not given: unlimited swap too.
        (0, -1) => Ok(Some(-1)),
        (0, _) => Ok(None),
        (-1, _) => Ok(Some(-1)),
        (swap, -1) => Ok(Some(swap)),
        (_, 0) => Err("a swap limit needs a memory limit".to_string()),
        (swap, limit) if limit < 0 || swap < limit => Err(format!(
            "memory+swap limit {swap} must be at least the memory limit {limit}"
        )),
        (swap, limit) => Ok(Some(swap - limit)),
    }
}

/// One rdma.max line: "mlx4_0 hca_handle=2 hca_object=2000".
pub(crate) fn rdma_line(device: &str, limit: &LinuxRdma) -> String {
    let value = |n: Option<u32>| n.map_or_else(|| "max".to_string(), |n| n.to_string());
    format!(
        "{device} hca_handle={} hca_object={}",
        value(limit.hca_handles()),
        value(limit.hca_objects())
    )
}

#[cfg(test)]
mod tests {
    use std::fs;

    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    use super::*;
    use crate::cgroups::{Cgroup, Layout};

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);

        assert_eq!(memory_swap_to_v2(0, -1), Ok(Some(-1)));
        assert_eq!(memory_swap_to_v2(0, 100), Ok(None));
        assert_eq!(memory_swap_to_v2(-1, 100), Ok(Some(-1)));
        assert_eq!(memory_swap_to_v2(300, -1), Ok(Some(300)));
        assert_eq!(memory_swap_to_v2(300, 100), Ok(Some(200)));
        assert_eq!(memory_swap_to_v2(100, 100), Ok(Some(0)));
        assert!(memory_swap_to_v2(50, 100).is_err());
        assert!(memory_swap_to_v2(50, 0).is_err());
    }

    /// A fake unified tree: what the kernel would show, as plain files.
    fn fake_tree(root: &Path, dir: &Path) {
        fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir_all(dir).unwrap();
        let files = [
            ("cgroup.procs", ""),
            ("cgroup.freeze", "0\n"),
            ("cgroup.events", "populated 0\nfrozen 0\n"),
            ("cpu.weight", "100\n"),
            ("cpu.max", "max 100000\n"),
            ("cpu.stat", "usage_usec 7\nuser_usec 5\nsystem_usec 2\n"),
            ("cpuset.cpus", ""),
            ("cpuset.mems", ""),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.low", "0\n"),
            ("memory.current", "4096\n"),
            ("memory.peak", "8192\n"),
            ("memory.stat", "anon 1000\nfile 2000\ninactive_file 1024\n"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"),
            ("pids.max", "max\n"),
            ("pids.current", "3\n"),
            ("io.weight", "default 100\n"),
            ("memory.high", "max\n"),
        ];
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
    }

    #[test]
    fn writes_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let dir = root.join("kubepods/pod1/ctr1");
        fake_tree(root, &dir);
        let cgroup = Cgroup::with_layout(
            "/kubepods/pod1/ctr1",
            Layout::V2 {
                root: root.to_path_buf(),
            },
        )
        .unwrap();
        cgroup.create().unwrap();
        // The root's subtree_control got the last controller enabled (plain file: last write wins).
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+pids"
        );

        let resources = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .swap(96i64 << 20)
                    .reservation(32i64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(42i64).build().unwrap())
            .unified(
                [("memory.high".to_string(), "50331648".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        cgroup.apply(&resources).unwrap();

        let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("cpuset.cpus"), "0");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), (32u64 << 20).to_string());
        assert_eq!(read("memory.low"), (32u64 << 20).to_string());
        assert_eq!(read("pids.max"), "42");
        assert_eq!(read("memory.high"), "50331648");

        // Only the period changes: the quota is kept.
        let period_only = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .period(200_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cgroup.apply(&period_only).unwrap();
        assert_eq!(read("cpu.max"), "50000 200000");

        let bad_key = LinuxResourcesBuilder::default()
            .unified(
                [("../escape".to_string(), "1".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        assert!(cgroup.apply(&bad_key).is_err());

        let stats = cgroup.stats().unwrap();
        assert_eq!(stats.cpu_usage_ns, 7000);
        assert_eq!(stats.cpu_user_ns, 5000);
        assert_eq!(stats.cpu_system_ns, 2000);
        assert_eq!(stats.memory_usage_bytes, 4096);
        assert_eq!(stats.memory_working_set_bytes, 3072);
        assert_eq!(stats.memory_limit_bytes, Some(64 << 20));
        assert_eq!(stats.memory_max_usage_bytes, 8192);
        assert_eq!(stats.memory_rss_bytes, 1000);
        assert_eq!(stats.memory_cache_bytes, 2000);
        assert_eq!(stats.pids_current, 3);
        assert_eq!(stats.pids_limit, Some(42));
        assert_eq!(stats.oom_kills, 2);
        assert_eq!(cgroup.oom_kills().unwrap(), 2);

        cgroup.add_process(1234).unwrap();
        assert_eq!(read("cgroup.procs"), "1234");
        assert!(!cgroup.is_frozen().unwrap());
        cgroup.thaw().unwrap();
        assert_eq!(read("cgroup.freeze"), "0");
    }

    /// A real cgroup2 tree: the hybrid host's /sys/fs/cgroup/unified has no controllers,
    /// but the core features (membership, freezing, cpu.stat, removal) are all there.
    /// On a pure v2 host the integration tests cover all of this with controllers.
    #[test]
    fn real_cgroup2_core_features() {
        let root = Path::new("/sys/fs/cgroup/unified");
        if nix::sys::statfs::statfs(root)
            .map(|s| s.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            .unwrap_or(true)
        {
            eprintln!("no hybrid cgroup2 mount at {}, skipped", root.display());
            return;
        }
        let top = format!("peapod-unit-{}", std::process::id());
        let layout = || Layout::V2 {
            root: root.to_path_buf(),
        };
        let cgroup = Cgroup::with_layout(&format!("/{top}/pod/ctr"), layout()).unwrap();
        cgroup.create().unwrap();
        cgroup.create().unwrap();

        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        cgroup.add_process(pid).unwrap();
        assert_eq!(cgroup.procs().unwrap(), vec![pid]);

        cgroup.freeze().unwrap();
        assert!(cgroup.is_frozen().unwrap());
        cgroup.thaw().unwrap();
        assert!(!cgroup.is_frozen().unwrap());

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while cgroup.stats().unwrap().cpu_usage_ns == 0 {
            assert!(std::time::Instant::now() < deadline, "no CPU usage counted");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // No memory controller here: the memory figures stay empty, and say so.
        assert!(matches!(
            cgroup.oom_kills(),
            Err(CgroupError::ControllerMissing { .. })
        ));

        // Frozen again, with a live process: delete must still remove everything.
        cgroup.freeze().unwrap();
        let top_cgroup = Cgroup::with_layout(&top, layout()).unwrap();
        top_cgroup.delete().unwrap();
        assert!(!root.join(&top).exists());
        assert!(!child.wait().unwrap().success());
        top_cgroup.delete().unwrap();
    }
}
