//! Loading and attaching httpd's eBPF programs (crate `httpd-ebpf`, embedded at build time).
//!
//! Everything is owned by the process: links are dropped (and the programs detached) when the
//! [`ConnCounter`] is dropped or the process exits, whatever the way. Nothing is pinned.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{HashMap, PerCpuArray};
use aya::programs::{CgroupAttachMode, SockOps};
use httpd_common::ebpf::{CONN_COUNTS_MAP, COUNT_PROGRAM, MAX_PORTS, PORTS_MAP, PortSlot};

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

/// The sock_ops program that counts connections established on watched local ports.
pub struct ConnCounter {
    bpf: Ebpf,
    ports: Vec<u16>,
}

impl ConnCounter {
    /// Loads the programs, records `ports`, attaches to the cgroup2 directory `cgroup`.
    pub fn attach(cgroup: &Path, ports: &[u16]) -> Result<ConnCounter, EbpfError> {
        let obj = object().ok_or(EbpfError::NotBuilt)?;
        if ports.len() > MAX_PORTS as usize {
            return Err(EbpfError::TooManyPorts(ports.len()));
        }
        let mut bpf = Ebpf::load(obj)?;
        {
            let mut map: HashMap<_, u16, PortSlot> = HashMap::try_from(
                bpf.map_mut(PORTS_MAP)
                    .ok_or(EbpfError::Missing(PORTS_MAP))?,
            )?;
            for (slot, port) in (0u32..).zip(ports) {
                map.insert(port, PortSlot { slot }, 0)?;
            }
        }
        let cg = File::open(cgroup).map_err(|source| EbpfError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        let prog: &mut SockOps = bpf
            .program_mut(COUNT_PROGRAM)
            .ok_or(EbpfError::Missing(COUNT_PROGRAM))?
            .try_into()?;
        prog.load()?;
        prog.attach(cg, CgroupAttachMode::Single)?;
        Ok(ConnCounter {
            bpf,
            ports: ports.to_vec(),
        })
    }

    /// Connections established on `port` since attach, summed over CPUs.
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
}
