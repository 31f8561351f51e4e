//! One call to go from the environment to a ready [`Communicator`].

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{resolve_token, Token};
use crate::comm::{Communicator, LocalComm};
use crate::error::{DistError, Result};
use crate::nccl::{nccl_available, NcclComm, NcclSetup};
use crate::ring::{claim_rank, RingComm, RingSetup};
use crate::store::{StoreClient, StoreServer};
use crate::world::{discover, WorldInfo};

/// Settings of [`init`] / [`init_from_env`].
#[derive(Debug, Clone)]
pub struct DistOptions {
    /// Deadline of every blocking operation once connected (default 60 s).
    pub timeout: Duration,
    /// Deadline for all ranks to show up at the rendezvous (default 120 s).
    pub rendezvous_timeout: Duration,
    /// Run directory holding the token file when `HR_DIST_TOKEN` is not set.
    pub run_dir: Option<PathBuf>,
    /// Which communicator to build (default [`Backend::Auto`]).
    pub backend: Backend,
    /// CUDA ordinal of this rank's tensors (`None`: CPU tensors). NCCL needs it; with
    /// several GPUs per node it is usually [`WorldInfo::local_rank`].
    pub device: Option<usize>,
}

/// The collective backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// NCCL when [`DistOptions::device`] is set and NCCL is available, else the CPU ring (a
    /// world of one: [`LocalComm`]). Falling back from a requested device prints one warning.
    #[default]
    Auto,
    /// The CPU TCP ring (a world of one: [`LocalComm`]).
    Ring,
    /// NCCL on [`DistOptions::device`], also in a world of one; an error when unavailable.
    Nccl,
}

impl Backend {
    /// The store value every rank of a job must agree on.
    fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Ring => "ring",
            Backend::Nccl => "nccl",
        }
    }
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            timeout: Duration::from_secs(60),
            rendezvous_timeout: Duration::from_secs(120),
            run_dir: None,
            backend: Backend::Auto,
            device: None,
        }
    }
}

/// The backend `opts` resolves to on this machine (Auto becomes Nccl or Ring).
fn resolve_backend(opts: &DistOptions) -> Backend {
    match (opts.backend, opts.device) {
        (Backend::Auto, Some(ordinal)) => match nccl_available(ordinal) {
            Ok(()) => Backend::Nccl,
            Err(e) => {
                eprintln!("hr-dist: using the CPU ring instead of NCCL: {e}");
                Backend::Ring
            }
        },
        (Backend::Auto, None) => Backend::Ring,
        (b, _) => b,
    }
}

/// The device NCCL runs on, or an error when `opts.device` is missing.
fn nccl_device(opts: &DistOptions) -> Result<usize> {
    opts.device.ok_or_else(|| {
        DistError::Invalid(
            "the nccl backend needs DistOptions::device (the CUDA ordinal of this rank)".into(),
        )
    })
}

/// Discovers the world from the process environment and connects (see [`init`]).
pub fn init_from_env(opts: &DistOptions) -> Result<(WorldInfo, Box<dyn Communicator>)> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let world = discover(&env)?;
    if world.world_size == 1 {
        return Ok((world, init_single(opts)?));
    }
    let token = resolve_token(
        &env,
        opts.run_dir.as_deref(),
        world.rank,
        opts.rendezvous_timeout,
    )?;
    let comm = init(&world, &token, opts)?;
    Ok((world, comm))
}

/// Connects this rank: rank 0 starts the store, every rank joins the CPU TCP ring or NCCL (see
/// [`Backend`]). A world of one gives a [`LocalComm`] without touching the network, or a
/// one-rank [`NcclComm`] for [`Backend::Nccl`].
pub fn init(world: &WorldInfo, token: &Token, opts: &DistOptions) -> Result<Box<dyn Communicator>> {
    if world.world_size == 1 {
        return init_single(opts);
    }
    Ok(match resolve_backend(opts) {
        Backend::Nccl => Box::new(init_nccl(world, token, opts)?),
        _ => Box::new(init_ring(world, token, opts)?),
    })
}

/// The communicator of a world of one.
fn init_single(opts: &DistOptions) -> Result<Box<dyn Communicator>> {
    Ok(match opts.backend {
        Backend::Nccl => Box::new(NcclComm::single(nccl_device(opts)?, opts.timeout)?),
        _ => Box::new(LocalComm),
    })
}

/// Like [`init`] with [`Backend::Nccl`] for a world of at least two, returning the concrete
/// [`NcclComm`] on CUDA device `opts.device`.
pub fn init_nccl(world: &WorldInfo, token: &Token, opts: &DistOptions) -> Result<NcclComm> {
    let ordinal = nccl_device(opts)?;
    nccl_available(ordinal)?;
    let (store, server) = connect_store(world, token, opts)?;
    agree_backend(&store, Backend::Nccl)?;
    claim_rank(&store, world.rank)?;
    let setup = NcclSetup {
        rank: world.rank,
        world: world.world_size,
        ordinal,
        timeout: opts.timeout,
        rendezvous_timeout: opts.rendezvous_timeout,
    };
    NcclComm::connect(setup, Some(store), server)
}

/// Rank 0 starts the store; every rank connects to it.
fn connect_store(
    world: &WorldInfo,
    token: &Token,
    opts: &DistOptions,
) -> Result<(StoreClient, Option<StoreServer>)> {
    let server = match world.rank {
        0 => Some(start_store(world, token)?),
        _ => None,
    };
    let store = StoreClient::connect(
        &world.master_addr,
        world.master_port,
        token,
        world.rank,
        opts.rendezvous_timeout,
        opts.timeout,
    )?;
    Ok((store, server))
}

/// Records this rank's backend in the store (first writer wins) and fails on a mismatch, so
/// ranks that resolved [`Backend::Auto`] differently fail at once instead of hanging.
fn agree_backend(store: &StoreClient, backend: Backend) -> Result<()> {
    let winner = store.set_if_absent("hr-dist/backend", backend.name().as_bytes())?;
    if winner != backend.name().as_bytes() {
        return Err(DistError::Invalid(format!(
            "this rank uses the {} backend but another rank chose {} (check the device and \
             the NCCL library on every node)",
            backend.name(),
            String::from_utf8_lossy(&winner)
        )));
    }
    Ok(())
}

/// Like [`init`] for a world of at least two, returning the concrete [`RingComm`].
pub fn init_ring(world: &WorldInfo, token: &Token, opts: &DistOptions) -> Result<RingComm> {
    let (store, server) = connect_store(world, token, opts)?;
    agree_backend(&store, Backend::Ring)?;
    let setup = RingSetup {
        rank: world.rank,
        world: world.world_size,
        token,
        timeout: opts.timeout,
        rendezvous_timeout: opts.rendezvous_timeout,
    };
    RingComm::connect(setup, store, server)
}

/// Binds the store on the master address when it is a loopback address, else on all interfaces.
fn start_store(world: &WorldInfo, token: &Token) -> Result<StoreServer> {
    let loopback = (world.master_addr.as_str(), world.master_port)
        .to_socket_addrs()
        .map(|mut a| a.any(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    let host = if loopback {
        world.master_addr.as_str()
    } else {
        "0.0.0.0"
    };
    StoreServer::bind((host, world.master_port), token.clone()).map_err(|e| match e {
        DistError::Io { source, .. } => {
            let held = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    ": another job, or a rank 0 left from an earlier run, holds the port"
                }
                _ => "",
            };
            DistError::io(
                format!(
                    "rank 0 binding the store on {host}:{} (MASTER_PORT){held}",
                    world.master_port
                ),
                source,
            )
        }
        e => e,
    })
}
