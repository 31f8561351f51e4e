//! One call to go from the environment to a ready [`Communicator`].

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{resolve_token, Token};
use crate::comm::{Communicator, LocalComm};
use crate::error::{DistError, Result};
use crate::ring::{RingComm, RingSetup};
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
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            timeout: Duration::from_secs(60),
            rendezvous_timeout: Duration::from_secs(120),
            run_dir: None,
        }
    }
}

/// Discovers the world from the process environment and connects (see [`init`]).
pub fn init_from_env(opts: &DistOptions) -> Result<(WorldInfo, Box<dyn Communicator>)> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let world = discover(&env)?;
    if world.world_size == 1 {
        return Ok((world, Box::new(LocalComm)));
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

/// Connects this rank: rank 0 starts the store, every rank joins the CPU TCP ring.
/// A world of one gives a [`LocalComm`] without touching the network.
pub fn init(world: &WorldInfo, token: &Token, opts: &DistOptions) -> Result<Box<dyn Communicator>> {
    if world.world_size == 1 {
        return Ok(Box::new(LocalComm));
    }
    Ok(Box::new(init_ring(world, token, opts)?))
}

/// Like [`init`] for a world of at least two, returning the concrete [`RingComm`].
pub fn init_ring(world: &WorldInfo, token: &Token, opts: &DistOptions) -> Result<RingComm> {
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
        DistError::Io { source, .. } => DistError::io(
            format!(
                "rank 0 binding the store on {host}:{} (MASTER_PORT)",
                world.master_port
            ),
            source,
        ),
        e => e,
    })
}
