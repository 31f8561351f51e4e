//! Creating a communicator: the unique id goes through the rendezvous store (rank 0 publishes,
//! the others wait), then a non-blocking `ncclCommInitRankConfig` polled until ready or the
//! rendezvous deadline (the error then names the ranks that never joined).

use super::*;

/// A config like `NCCL_CONFIG_INITIALIZER` (every field undefined) with `blocking = 0`.
pub(super) fn nonblocking_config() -> sys::ncclConfig_t {
    const UNDEF: c_int = c_int::MIN;
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: 0xcafe_beef,
        version: 2 * 10000 + 30 * 100, // the layout of cudarc's nccl-02030 bindings
        blocking: 0,
        cgaClusterSize: UNDEF,
        minCTAs: UNDEF,
        maxCTAs: UNDEF,
        netName: std::ptr::null(),
        splitShare: UNDEF,
        trafficClass: UNDEF,
        commName: std::ptr::null(),
        collnetEnable: UNDEF,
        CTAPolicy: UNDEF,
        shrinkShare: UNDEF,
        nvlsCTAs: UNDEF,
        nChannelsPerNetPeer: UNDEF,
        nvlinkCentricSched: UNDEF,
        graphUsageMode: UNDEF,
        numRmaCtx: UNDEF,
        maxP2pPeers: UNDEF,
    }
}

impl NcclComm {
    /// A world of one on CUDA device `ordinal` (no store needed).
    pub fn single(ordinal: usize, timeout: Duration) -> Result<NcclComm> {
        let setup = NcclSetup {
            rank: 0,
            world: 1,
            ordinal,
            timeout,
            rendezvous_timeout: timeout,
        };
        NcclComm::connect(setup, None, None)
    }

    /// Creates this rank's communicator: checks availability, exchanges the unique id through
    /// `store` (required when `world > 1`) and initialises NCCL within the rendezvous timeout.
    /// `server` is the store server when this is rank 0 (kept alive with the communicator).
    pub fn connect(
        setup: NcclSetup,
        store: Option<StoreClient>,
        server: Option<StoreServer>,
    ) -> Result<NcclComm> {
        let NcclSetup { rank, world, .. } = setup;
        if world == 0 || rank >= world {
            return Err(DistError::Invalid(format!(
                "nccl needs rank < world, got {rank}/{world}"
            )));
        }
        nccl_available(setup.ordinal)?;
        let dev = cuda::context(setup.ordinal)?;
        let id = exchange_id(&setup, store.as_ref())?;
        if let Some(s) = &store {
            s.set(&format!("{JOINED_PREFIX}/{rank}"), b"1")?;
        }
        let mut me = NcclComm {
            comm: std::ptr::null_mut(),
            rank,
            world,
            on: dev.stream.clone(),
            side: None,
            dev,
            timeout: setup.timeout,
            store,
            _server: server,
            seq: 0,
            poisoned: None,
        };
        me.init_comm(id, setup.rendezvous_timeout)?;
        Ok(me)
    }

    /// CUDA device ordinal of this communicator.
    pub fn ordinal(&self) -> usize {
        self.dev.ordinal
    }

    /// The store client (`None` in a world of one).
    pub fn store(&self) -> Option<&StoreClient> {
        self.store.as_ref()
    }

    /// Non-blocking `ncclCommInitRankConfig`, polled until ready or `limit` passes.
    pub(super) fn init_comm(&mut self, id: sys::ncclUniqueId, limit: Duration) -> Result<()> {
        self.bind("nccl init")?;
        let mut cfg = nonblocking_config();
        let (world, rank) = (self.world as c_int, self.rank as c_int);
        // SAFETY: `self.comm` and `cfg` are valid pointers for the call; symbols were checked.
        let rc = unsafe { sys::ncclCommInitRankConfig(&mut self.comm, world, id, rank, &mut cfg) };
        if !matches!(
            rc,
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress
        ) {
            let msg = describe(rc, self.comm);
            self.abort();
            return Err(DistError::Nccl {
                call: "ncclCommInitRankConfig",
                op: "init".into(),
                msg,
            });
        }
        let deadline = Instant::now() + limit;
        match self.settle(deadline) {
            Ok(()) => Ok(()),
            Err(fail) => {
                self.abort();
                Err(self.init_error(fail, limit))
            }
        }
    }

    /// Names the ranks that never reached initialisation (from the store's join marks).
    pub(super) fn init_error(&self, fail: Fail, limit: Duration) -> DistError {
        match fail {
            Fail::Timeout => DistError::Unresponsive {
                ranks: self.absent(JOINED_PREFIX),
                op: "nccl init (ncclCommInitRankConfig)".into(),
                after: limit,
            },
            Fail::Nccl { call, msg } => DistError::Nccl {
                call,
                op: "init".into(),
                msg,
            },
            Fail::Cuda(msg) => cuda_err("init", "CUDA", msg),
        }
    }
}

/// Rank 0 creates the unique id and publishes it; the others wait for it.
pub(super) fn exchange_id(
    setup: &NcclSetup,
    store: Option<&StoreClient>,
) -> Result<sys::ncclUniqueId> {
    let store = match (store, setup.world) {
        (_, 1) => return new_id(),
        (Some(s), _) => s,
        (None, w) => {
            return Err(DistError::Invalid(format!(
                "nccl with {w} ranks needs the rendezvous store"
            )))
        }
    };
    if setup.rank == 0 {
        let id = new_id()?;
        let bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
        store.set(ID_KEY, &bytes)?;
        return Ok(id);
    }
    let bytes = store
        .wait(ID_KEY, setup.rendezvous_timeout)
        .map_err(|e| match e {
            DistError::Timeout { after, .. } => DistError::Unresponsive {
                ranks: vec![0],
                op: "nccl rendezvous (waiting for rank 0's unique id)".into(),
                after,
            },
            e => e,
        })?;
    id_from_bytes(&bytes)
}

pub(super) fn new_id() -> Result<sys::ncclUniqueId> {
    let mut id = sys::ncclUniqueId { internal: [0; 128] };
    // SAFETY: `id` is a valid out pointer; the symbol was checked by `nccl_available`.
    let rc = unsafe { sys::ncclGetUniqueId(&mut id) };
    nccl_ok(rc, "ncclGetUniqueId", "rendezvous", std::ptr::null_mut())?;
    Ok(id)
}

pub(super) fn id_from_bytes(bytes: &[u8]) -> Result<sys::ncclUniqueId> {
    let mut id = sys::ncclUniqueId { internal: [0; 128] };
    if bytes.len() != id.internal.len() {
        return Err(DistError::Protocol(format!(
            "nccl unique id in the store has {} bytes, expected 128",
            bytes.len()
        )));
    }
    for (d, &b) in id.internal.iter_mut().zip(bytes) {
        *d = b as c_char;
    }
    Ok(id)
}
