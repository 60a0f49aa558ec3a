//! Disk helpers of the cold rows of `cargo xtask bench`: a read throttle on one disk for the
//! servers' processes only (a blkio cgroup), and dropping and measuring the page cache of
//! given files.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// Read limits of the throttled disk: a slow network disk, so that one cold read takes long
/// enough to show whether it stalls a worker.
pub(crate) const READ_BPS: u64 = 24 << 20;
pub(crate) const READ_IOPS: u64 = 300;

const CGROUP: &str = "xtask-bench-cold";
const V1_BLKIO: &str = "/sys/fs/cgroup/blkio";
/// cgroup v2 hierarchies: the hybrid layout's, then a v2-only system's.
const V2_ROOTS: [&str; 2] = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

/// The whole disk holding `path`, as "MAJ:MIN" (derived at run time: never hardcoded).
pub(crate) fn disk_of(path: &Path) -> Result<String> {
    let dev = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    ensure!(
        sys.exists(),
        "{} is not on a block device ({major}:{minor}: tmpfs or overlay?)",
        path.display()
    );
    if !sys.join("partition").exists() {
        return Ok(format!("{major}:{minor}"));
    }
    // Throttle rules are refused for partitions (ENODEV): use the disk, the partition's parent
    // directory in sysfs.
    let real = std::fs::canonicalize(&sys)?;
    let parent = real.parent().context("partition without a disk")?;
    let dev = std::fs::read_to_string(parent.join("dev"))?;
    Ok(dev.trim().to_string())
}

/// The readahead of disk "MAJ:MIN", in KiB.
pub(crate) fn read_ahead_kb(disk: &str) -> Option<u64> {
    let path = format!("/sys/dev/block/{disk}/queue/read_ahead_kb");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// cgroup v1 blkio: blkio.throttle.read_{bps,iops}_device.
    V1,
    /// cgroup v2 io controller: io.max.
    V2,
}

/// A cgroup whose processes read `disk` at READ_BPS and READ_IOPS at most. Removed on drop.
pub(crate) struct Throttle {
    kind: Kind,
    /// The hierarchy's root, where members go back before the cgroup is removed.
    parent: PathBuf,
    dir: PathBuf,
    disk: String,
    /// cgroup v2: whether we turned the io controller on for the root's children.
    enabled_io: bool,
}

impl Throttle {
    /// Creates the throttled cgroup, or says why it cannot (not root, no controller).
    pub(crate) fn new(disk: &str) -> Result<Throttle> {
        ensure!(crate::cmd::is_root(), "not root: cgroups cannot be created");
        let (kind, parent) = hierarchy()?;
        let dir = parent.join(CGROUP);
        // A cgroup left by a killed run is reused: its limits are written again below.
        if let Err(e) = std::fs::create_dir(&dir)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(e).with_context(|| format!("create {}", dir.display()));
        }
        let mut t = Throttle {
            kind,
            parent,
            dir,
            disk: disk.to_string(),
            enabled_io: false,
        };
        // From here on a failure drops `t`, which removes the cgroup.
        t.limit()?;
        Ok(t)
    }

    fn limit(&mut self) -> Result<()> {
        let d = &self.disk;
        match self.kind {
            Kind::V1 => {
                self.write("blkio.throttle.read_bps_device", &format!("{d} {READ_BPS}"))?;
                self.write(
                    "blkio.throttle.read_iops_device",
                    &format!("{d} {READ_IOPS}"),
                )
            }
            Kind::V2 => {
                // io.max exists in a child only when the parent hands the io controller down.
                let control = self.parent.join("cgroup.subtree_control");
                let on = std::fs::read_to_string(&control)?;
                if !on.split_whitespace().any(|c| c == "io") {
                    write_file(&control, "+io")?;
                    self.enabled_io = true;
                }
                self.write("io.max", &format!("{d} rbps={READ_BPS} riops={READ_IOPS}"))
            }
        }
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        write_file(&self.dir.join(file), value)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves every process of `pids` (all its threads: nginx's thread pool too) into the cgroup.
    pub(crate) fn add(&self, pids: &[u32]) -> Result<()> {
        for pid in pids {
            // cgroup.procs takes one pid per write.
            self.write("cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Bytes read from the disk by the cgroup's processes so far (what the throttle let
    /// through: the proof that the servers' reads went through it).
    pub(crate) fn read_bytes(&self) -> Result<u64> {
        let file = match self.kind {
            Kind::V1 => "blkio.throttle.io_service_bytes",
            Kind::V2 => "io.stat",
        };
        let text = std::fs::read_to_string(self.dir.join(file))?;
        let disk = format!("{} ", self.disk);
        // No line for the disk before its first I/O: nothing read yet.
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(&disk))
            .find_map(|rest| read_field(self.kind, rest))
            .unwrap_or(0))
    }
}

/// The bytes read in one line of the stats, after "MAJ:MIN ": v1 has a line per operation
/// ("Read 123"), v2 one line of fields ("rbytes=123 wbytes=0 ...").
fn read_field(kind: Kind, rest: &str) -> Option<u64> {
    match kind {
        Kind::V1 => rest.strip_prefix("Read ")?.trim().parse().ok(),
        Kind::V2 => rest
            .split_whitespace()
            .find_map(|f| f.strip_prefix("rbytes="))?
            .parse()
            .ok(),
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        // The servers have normally exited; a cgroup with members cannot be removed, so any
        // process still in it goes back to the parent first.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = write_file(&self.parent.join("cgroup.procs"), pid);
            }
        }
        // An exiting process can keep the cgroup busy for a moment (EBUSY): retry briefly.
        let mut removed = false;
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                removed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !removed {
            eprintln!("xtask bench: could not remove {}", self.dir.display());
        }
        if self.enabled_io {
            let _ = write_file(&self.parent.join("cgroup.subtree_control"), "-io");
        }
    }
}

/// v1 blkio when mounted (the brief's machine: hybrid layout), else a v2 hierarchy whose root
/// offers the io controller.
fn hierarchy() -> Result<(Kind, PathBuf)> {
    let v1 = Path::new(V1_BLKIO);
    if v1.join("blkio.throttle.read_bps_device").exists() {
        return Ok((Kind::V1, v1.to_path_buf()));
    }
    for root in V2_ROOTS {
        let root = Path::new(root);
        let controllers = std::fs::read_to_string(root.join("cgroup.controllers"));
        if controllers.is_ok_and(|c| c.split_whitespace().any(|c| c == "io")) {
            return Ok((Kind::V2, root.to_path_buf()));
        }
    }
    bail!("no cgroup v1 blkio throttle and no cgroup v2 io controller")
}

fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("write {value:?} to {}", path.display()))
}

/// Drops the page cache of `files` (POSIX_FADV_DONTNEED). Dirty pages and pages mapped by a
/// process stay: the corpus is synced after it is written, and [`cached_bytes`] checks.
pub(crate) fn drop_cache(files: &[PathBuf]) -> Result<()> {
    for f in files {
        let file = File::open(f).with_context(|| format!("open {}", f.display()))?;
        // SAFETY: plain syscall on an open fd with integer arguments (len 0: to the end).
        let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r))
                .with_context(|| format!("posix_fadvise {}", f.display()));
        }
    }
    Ok(())
}

/// Bytes of `files` in the page cache, and their total size (mincore over a mapping of each
/// file: mapping reads nothing, and mincore reports the page cache of a file mapping).
pub(crate) fn cached_bytes(files: &[PathBuf]) -> Result<(u64, u64)> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let (mut cached, mut total) = (0u64, 0u64);
    for f in files {
        let file = File::open(f).with_context(|| format!("open {}", f.display()))?;
        let len = file.metadata()?.len();
        total += len;
        if len > 0 {
            cached += resident_pages(&file, len, page)
                .with_context(|| format!("mincore {}", f.display()))?
                * page;
        }
    }
    Ok((cached.min(total), total))
}

fn resident_pages(file: &File, len: u64, page: u64) -> std::io::Result<u64> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let mut vec = vec![0u8; len.div_ceil(page as usize)];
    // SAFETY: a fresh read-only shared mapping of an open file, never dereferenced here;
    // mincore writes one byte per page into `vec`, which has exactly that many; the mapping is
    // unmapped before returning.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let r = libc::mincore(map, len, vec.as_mut_ptr());
        let err = std::io::Error::last_os_error();
        libc::munmap(map, len);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(vec.iter().filter(|&&b| b & 1 == 1).count() as u64)
}

/// Per-task delay accounting (`kernel.task_delayacct`) on while this lives, back to what it
/// was on drop: the kernel then counts, per thread, the time spent waiting for block I/O
/// (field 42 of /proc/PID/task/TID/stat).
pub(crate) struct DelayAcct {
    old: String,
}

const DELAYACCT: &str = "/proc/sys/kernel/task_delayacct";

impl DelayAcct {
    pub(crate) fn on() -> Result<DelayAcct> {
        let old =
            std::fs::read_to_string(DELAYACCT).with_context(|| format!("read {DELAYACCT}"))?;
        write_file(Path::new(DELAYACCT), "1")?;
        Ok(DelayAcct {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for DelayAcct {
    fn drop(&mut self) {
        let _ = std::fs::write(DELAYACCT, &self.old);
    }
}

/// Clock ticks the event-loop threads of processes `pids` have waited for block I/O (delay
/// accounting must be on): httpd's `worker-N` threads and each process's main thread (an
/// nginx worker's loop). Read threads (httpd's `cold-N`, nginx's thread pool) wait by design
/// and are not counted.
pub(crate) fn loop_io_wait_ticks(pids: &[u32]) -> u64 {
    let mut ticks = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            // "TID (COMM) STATE ...": the name may hold spaces; fields count from STATE (3).
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let is_loop =
                head.contains("(worker-") || t.file_name().to_str() == Some(&pid.to_string());
            if !is_loop {
                continue;
            }
            if let Some(v) = rest
                .split_whitespace()
                .nth(42 - 3)
                .and_then(|v| v.parse::<u64>().ok())
            {
                ticks += v;
            }
        }
    }
    ticks
}
