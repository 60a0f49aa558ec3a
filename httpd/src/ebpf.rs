//! Loading and attaching httpd's eBPF programs (crate `httpd-ebpf`, embedded at build time).
//!
//! Everything is owned by the process: the links are dropped (and the programs detached) when
//! [`Programs`] is dropped or the process exits, whatever the way (SIGKILL included: the kernel
//! releases links with the last fd). Nothing is pinned.
//!
//! The programs report rare events (a failed SOCKHASH insert, a message or segment with no
//! peer) with aya-log, at debug level. They are loaded with aya-log's level set to what httpd's
//! log takes for [`LOG_TARGET`], so below `--log-level debug` they write nothing. Unless that
//! level is off, a thread of its own reads the ring buffer and hands the records to the `log`
//! crate, which tracing-subscriber forwards to httpd's log.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aya::maps::{Array, HashMap, PerCpuArray, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SkSkb, SockOps};
use aya::{Ebpf, EbpfLoader};
use httpd_common::ebpf::{
    CONN_COUNTS_MAP, FASTPATH_COUNTERS_MAP, FASTPATH_MAP, FastpathConfig, MAX_PORTS, PEERS_MAP,
    PORTS_MAP, PortSlot, SKMSG_PROGRAM, SOCKOPS_PROGRAM, SOCKS_MAP, SPLICE_PROGRAM, SockKey,
    TARGETS_MAP, TUNNELS_MAP, counter,
};

use crate::forward::splice::{Maps, Splicer};
use httpd_common::ebpf::ip_u32;

/// Default cgroup2 mount on this platform (`/sys/fs/cgroup` itself is cgroup v1 here).
pub const DEFAULT_CGROUP: &str = "/sys/fs/cgroup/unified";

/// Why the eBPF programs are not running.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("this httpd was built without the eBPF object (run `cargo xtask build-ebpf`)")]
    NotBuilt,
    #[error("too many ports to watch ({0}, at most {MAX_PORTS})")]
    TooManyPorts(usize),
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("eBPF object lacks {0}")]
    Missing(&'static str),
}

/// The target of the programs' log records (their crate name, aya-log's default).
pub const LOG_TARGET: &str = "httpd_ebpf";

/// The embedded object, when this build has one.
pub fn object() -> Option<&'static [u8]> {
    #[cfg(httpd_ebpf)]
    {
        Some(aya::include_bytes_aligned!(env!("HTTPD_EBPF_OBJ")))
    }
    #[cfg(not(httpd_ebpf))]
    {
        None
    }
}

/// The connections the fast path takes: httpd's upstream sockets, bound to `source`, to
/// `upstream`. Other connections, other clients of the same app server included, never match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fastpath {
    pub source: Ipv4Addr,
    pub upstream: SocketAddrV4,
}

/// Fast-path counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub inserted: u64,
    pub insert_failed: u64,
    pub redirected: u64,
    pub redirected_bytes: u64,
    pub passed: u64,
    pub spliced: u64,
    pub spliced_bytes: u64,
    pub splice_passed: u64,
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "inserted={} insert_failed={} redirected={} redirected_bytes={} passed={} \
             spliced={} spliced_bytes={} splice_passed={}",
            self.inserted,
            self.insert_failed,
            self.redirected,
            self.redirected_bytes,
            self.passed,
            self.spliced,
            self.spliced_bytes,
            self.splice_passed
        )
    }
}

/// The loaded and attached programs.
pub struct Programs {
    bpf: Ebpf,
    ports: Vec<u16>,
    pub fastpath: Option<Fastpath>,
    pub cgroup: PathBuf,
    /// The tunnel splice, when `--ebpf-splice on`.
    pub splicer: Option<std::sync::Arc<Splicer>>,
    /// The reader of the programs' log records, when httpd's log takes them.
    _log: Option<LogReader>,
}

impl Programs {
    /// Loads the programs, writes the configuration, attaches sk_msg to the SOCKHASH and
    /// sock_ops to the cgroup2 directory `cgroup`; with `splice`, the stream verdict to the
    /// tunnel SOCKHASH.
    pub fn attach(
        cgroup: &Path,
        ports: &[u16],
        fastpath: Option<Fastpath>,
        splice: bool,
    ) -> Result<Programs, EbpfError> {
        let obj = object().ok_or(EbpfError::NotBuilt)?;
        if ports.len() > MAX_PORTS as usize {
            return Err(EbpfError::TooManyPorts(ports.len()));
        }
        let cg = File::open(cgroup).map_err(|source| EbpfError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        // Records the log would drop are not even written (aya-log-ebpf checks this global).
        let log_level = ebpf_log_level();
        let mut bpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, false)
            .load(obj)?;
        {
            let mut map: HashMap<_, u16, PortSlot> = HashMap::try_from(
                bpf.map_mut(PORTS_MAP)
                    .ok_or(EbpfError::Missing(PORTS_MAP))?,
            )?;
            for (slot, port) in (0u32..).zip(ports) {
                map.insert(port, PortSlot { slot }, 0)?;
            }
        }
        if let Some(fp) = fastpath {
            let mut cfg: Array<_, FastpathConfig> = Array::try_from(
                bpf.map_mut(FASTPATH_MAP)
                    .ok_or(EbpfError::Missing(FASTPATH_MAP))?,
            )?;
            cfg.set(
                0,
                FastpathConfig {
                    source_ip: ip_u32(fp.source),
                    upstream_ip: ip_u32(*fp.upstream.ip()),
                    upstream_port: u32::from(fp.upstream.port()),
                    enabled: 1,
                },
                0,
            )?;
            let socks: SockHash<_, SockKey> =
                SockHash::try_from(bpf.map(SOCKS_MAP).ok_or(EbpfError::Missing(SOCKS_MAP))?)?;
            let socks_fd = socks.fd().try_clone().map_err(|e| {
                EbpfError::Map(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error: e,
                }))
            })?;
            let msg: &mut SkMsg = bpf
                .program_mut(SKMSG_PROGRAM)
                .ok_or(EbpfError::Missing(SKMSG_PROGRAM))?
                .try_into()?;
            msg.load()?;
            msg.attach(&socks_fd)?;
        }
        let splicer = if splice {
            Some(std::sync::Arc::new(attach_splice(
                &mut bpf,
                fastpath.map(|f| f.source),
            )?))
        } else {
            None
        };
        let ops: &mut SockOps = bpf
            .program_mut(SOCKOPS_PROGRAM)
            .ok_or(EbpfError::Missing(SOCKOPS_PROGRAM))?
            .try_into()?;
        ops.load()?;
        ops.attach(cg, CgroupAttachMode::Single)?;
        let log = if log_level == 0 {
            None
        } else {
            match LogReader::start(&mut bpf) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("eBPF log records not shown: {e}");
                    None
                }
            }
        };
        Ok(Programs {
            bpf,
            ports: ports.to_vec(),
            fastpath,
            cgroup: cgroup.to_path_buf(),
            splicer,
            _log: log,
        })
    }

    /// Connections accepted on `port` since attach, summed over CPUs.
    pub fn established(&self, port: u16) -> Result<u64, EbpfError> {
        let Some(slot) = self.ports.iter().position(|&p| p == port) else {
            return Ok(0);
        };
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.bpf
                .map(CONN_COUNTS_MAP)
                .ok_or(EbpfError::Missing(CONN_COUNTS_MAP))?,
        )?;
        Ok(map.get(&(slot as u32), 0)?.iter().sum())
    }

    /// The fast-path counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, EbpfError> {
        let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.bpf
                .map(FASTPATH_COUNTERS_MAP)
                .ok_or(EbpfError::Missing(FASTPATH_COUNTERS_MAP))?,
        )?;
        let get = |i: u32| -> Result<u64, EbpfError> { Ok(map.get(&i, 0)?.iter().sum()) };
        Ok(Counters {
            inserted: get(counter::INSERTED)?,
            insert_failed: get(counter::INSERT_FAILED)?,
            redirected: get(counter::REDIRECTED)?,
            redirected_bytes: get(counter::REDIRECTED_BYTES)?,
            passed: get(counter::PASSED)?,
            spliced: get(counter::SPLICED)?,
            spliced_bytes: get(counter::SPLICED_BYTES)?,
            splice_passed: get(counter::SPLICE_PASSED)?,
        })
    }
}

/// Takes the tunnel maps out of the object and attaches the stream verdict to `TUNNELS`.
fn attach_splice(bpf: &mut Ebpf, fast_source: Option<Ipv4Addr>) -> Result<Splicer, EbpfError> {
    let mut take = |name: &'static str| bpf.take_map(name).ok_or(EbpfError::Missing(name));
    let tunnels: SockHash<_, SockKey> = SockHash::try_from(take(TUNNELS_MAP)?)?;
    let targets: SockHash<_, SockKey> = SockHash::try_from(take(TARGETS_MAP)?)?;
    let peers: HashMap<_, SockKey, SockKey> = HashMap::try_from(take(PEERS_MAP)?)?;
    let verdict: &mut SkSkb = bpf
        .program_mut(SPLICE_PROGRAM)
        .ok_or(EbpfError::Missing(SPLICE_PROGRAM))?
        .try_into()?;
    verdict.load()?;
    verdict.attach(tunnels.fd())?;
    Ok(Splicer::new(
        Maps {
            tunnels,
            targets,
            peers,
        },
        fast_source,
    ))
}

/// aya-log's level (`aya_log::Level` as u8, 0 = off) matching what httpd's log takes from
/// [`LOG_TARGET`].
fn ebpf_log_level() -> u8 {
    use tracing::Level;
    if tracing::enabled!(target: LOG_TARGET, Level::TRACE) {
        aya_log::Level::Trace as u8
    } else if tracing::enabled!(target: LOG_TARGET, Level::DEBUG) {
        aya_log::Level::Debug as u8
    } else if tracing::enabled!(target: LOG_TARGET, Level::INFO) {
        aya_log::Level::Info as u8
    } else if tracing::enabled!(target: LOG_TARGET, Level::WARN) {
        aya_log::Level::Warn as u8
    } else if tracing::enabled!(target: LOG_TARGET, Level::ERROR) {
        aya_log::Level::Error as u8
    } else {
        0
    }
}

/// Why the log reader did not start.
#[derive(Debug, thiserror::Error)]
enum LogError {
    #[error("{0}")]
    Logger(#[from] aya_log::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A thread that waits on the programs' log ring buffer and hands what arrives to the `log`
/// crate (`aya_log::EbpfLogger::flush`). Dropping it reads what is left and ends the thread.
struct LogReader {
    stop: Arc<AtomicBool>,
    waker: mio::Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogReader {
    const RECORDS: mio::Token = mio::Token(0);
    const WAKER: mio::Token = mio::Token(1);

    fn start(bpf: &mut Ebpf) -> Result<LogReader, LogError> {
        use std::os::fd::AsRawFd;
        let mut logger = aya_log::EbpfLogger::init(bpf)?;
        let mut poll = mio::Poll::new()?;
        poll.registry().register(
            &mut mio::unix::SourceFd(&logger.as_raw_fd()),
            Self::RECORDS,
            mio::Interest::READABLE,
        )?;
        let waker = mio::Waker::new(poll.registry(), Self::WAKER)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ebpf-log".into())
            .spawn(move || {
                let mut events = mio::Events::with_capacity(4);
                loop {
                    // The ring buffer wakes its reader when a record is committed where the
                    // reader stopped, and `flush` reads to the end: no record is left waiting.
                    if let Err(e) = poll.poll(&mut events, None)
                        && e.kind() != std::io::ErrorKind::Interrupted
                    {
                        tracing::warn!("eBPF log records: {e}; no more shown");
                        return;
                    }
                    // aya-log panics on a record it cannot decode: stop reading rather than die.
                    let flushed =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logger.flush()));
                    if flushed.is_err() {
                        tracing::warn!(
                            "eBPF log records: a record could not be read; no more shown"
                        );
                        return;
                    }
                    if stopped.load(Ordering::Acquire) {
                        return;
                    }
                }
            })?;
        Ok(LogReader {
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
