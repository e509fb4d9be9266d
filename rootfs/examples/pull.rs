//! A small CLI over the library, used by scripts/bench-pull and handy by hand.
//!
//! ```text
//! pull ROOT REFERENCE [REGISTRIES_CONF]      pull (and unpack) an image, print ms
//! snapshots ROOT IMAGE COUNT MOUNT_BASE      prepare+mount COUNT snapshots, print costs
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use peapod_rootfs::{AuthConfig, RootfsStore, StoreOptions};

fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map(|u| {
        let user = u.user_time();
        let sys = u.system_time();
        Duration::from_micros(
            (user.tv_sec() * 1_000_000 + user.tv_usec() + sys.tv_sec() * 1_000_000 + sys.tv_usec())
                as u64,
        )
    });
    usage.unwrap_or_default()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

async fn pull(root: &Path, reference: &str, conf: Option<PathBuf>) -> anyhow::Result<()> {
    let store = RootfsStore::open_with(
        root,
        StoreOptions {
            registries_conf: conf,
            ..Default::default()
        },
    )?;
    let started = Instant::now();
    let record = store
        .pull(reference, &AuthConfig::anonymous())
        .await
        .with_context(|| format!("pulling {reference}"))?;
    println!(
        "pull_ms {:.1} id {} layers {}",
        started.elapsed().as_secs_f64() * 1000.0,
        record.id,
        record.layers.len()
    );
    Ok(())
}

async fn snapshots(root: &Path, image: &str, count: usize, base: &Path) -> anyhow::Result<()> {
    let store = RootfsStore::open_with(
        root,
        StoreOptions {
            registries_conf: None,
            ..Default::default()
        },
    )?;
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let run = std::process::id();
    for i in 0..count {
        let key = format!("bench-{run}-{i}");
        let target = base.join(&key);
        std::fs::create_dir_all(&target)?;
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        store
            .prepare_and_mount_snapshot(&key, image, false, &target)
            .await?;
        walls.push(wall0.elapsed().as_secs_f64() * 1e6);
        cpus.push((cpu_time() - cpu0).as_secs_f64() * 1e6);
    }
    // The same overlay mounted by a bare mount(2), to tell peapod's cost from the kernel's.
    let spec = store.snapshot_mount(&format!("bench-{run}-0")).await?;
    let mut raw_cpus = Vec::new();
    for i in 0..count {
        let dir = base.join(format!("raw-{i}"));
        for sub in ["upper", "work", "mnt"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let lower = spec
            .options
            .iter()
            .find(|o| o.starts_with("lowerdir="))
            .context("no lowerdir")?;
        let options = format!("{lower},upperdir={0}/upper,workdir={0}/work", dir.display());
        let cpu0 = cpu_time();
        nix::mount::mount(
            Some("overlay"),
            &dir.join("mnt"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )?;
        raw_cpus.push((cpu_time() - cpu0).as_secs_f64() * 1e6);
    }
    for i in 0..count {
        let dir = base.join(format!("raw-{i}"));
        nix::mount::umount2(&dir.join("mnt"), nix::mount::MntFlags::MNT_DETACH)?;
        std::fs::remove_dir_all(&dir)?;
        let key = format!("bench-{run}-{i}");
        store.remove_snapshot(&key).await?;
        let _ = std::fs::remove_dir(base.join(&key));
    }
    let (cpu, raw) = (median(cpus), median(raw_cpus));
    println!(
        "snapshots {count} median_wall_us {:.0} median_cpu_us {cpu:.0} bare_mount_cpu_us {raw:.0} overhead_cpu_us {:.0}",
        median(walls),
        cpu - raw
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["pull", root, reference] => pull(Path::new(root), reference, None).await,
        ["pull", root, reference, conf] => {
            pull(Path::new(root), reference, Some(conf.into())).await
        }
        ["snapshots", root, image, count, base] => {
            snapshots(Path::new(root), image, count.parse()?, Path::new(base)).await
        }
        _ => bail!(
            "usage: pull ROOT REFERENCE [REGISTRIES_CONF] | snapshots ROOT IMAGE COUNT MOUNT_BASE"
        ),
    }
}
