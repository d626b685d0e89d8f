//! The collectives over MPI (cargo feature `mpi`): one process per rank, launched by `mpirun`.
//!
//! Every reduction gathers the ranks' buffers and sums them on each rank in rank order, with
//! the same [`sum_in_rank_order`] the in-process backend uses, never `MPI_Allreduce` (whose
//! summation order is the implementation's): an MPI run gives the in-process run's bits. All
//! calls are built on two immediate (non-blocking) operations, an all-gather of variable-length
//! parts and a broadcast, polled against a deadline, so a rank that died or hangs stops the job
//! within the timeout ([`TIMEOUT_ENV`], default 120 s) instead of leaving the others waiting.
//! A rank that fails prints its error and calls `MPI_Abort`, which ends every rank.

use super::pipeline::Port;
use super::{sum_in_rank_order, Collective};
use crate::error::{Error, Result};
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Seconds a collective may wait for the other ranks before the job is aborted.
pub const TIMEOUT_ENV: &str = "WGTRAIN_MPI_TIMEOUT_S";

pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    bytes: AtomicU64,
    timeout: Duration,
}

// SAFETY: the communicator is a handle MPI was initialised to use from one thread at a time
// (`Threading::Serialized` or better); a rank runs its whole step on one thread, so no two
// calls on it overlap.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

impl Mpi {
    pub fn new(world: SimpleCommunicator) -> Result<Mpi> {
        let timeout = match std::env::var(TIMEOUT_ENV) {
            Ok(s) => s
                .parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    Error::Config(format!("{TIMEOUT_ENV}={s:?}: expected seconds, e.g. 120"))
                })?,
            Err(_) => Duration::from_secs(120),
        };
        Ok(Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
            bytes: AtomicU64::new(0),
            timeout,
        })
    }

    /// Polls an immediate operation until it completes; past the deadline, aborts the job.
    fn finish<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
        &self,
        what: &str,
        request: mpi::request::Request<'a, D, S>,
    ) {
        wait(
            &self.world,
            self.rank,
            self.size,
            self.timeout,
            what,
            request,
        )
    }

    /// The ranks of this group with the same `color`, in rank order, as a group of their own
    /// (every rank calls it, in the same order): a pipeline's stages of one replica, a stage's
    /// replicas.
    pub fn split(&self, color: usize) -> Result<Mpi> {
        let comm = self
            .world
            .split_by_color(mpi::topology::Color::with_value(color as i32))
            .ok_or_else(|| Error::Device("MPI would not split the ranks into groups".into()))?;
        Mpi::new(comm)
    }

    /// Ports to the ranks `prev` and `next` of this group (a pipeline stage's neighbours), over
    /// a communicator of their own (every rank calls it, in the same order).
    pub fn ports(
        &self,
        prev: Option<usize>,
        next: Option<usize>,
    ) -> (Option<MpiPort>, Option<MpiPort>) {
        let comm = Arc::new(Shared(self.world.duplicate()));
        let port = |peer: usize| MpiPort {
            comm: comm.clone(),
            peer,
            rank: self.rank,
            size: self.size,
            timeout: self.timeout,
        };
        (prev.map(port), next.map(port))
    }

    /// Every rank's `part` (of any length, `counts[r]` values for rank r), concatenated in rank
    /// order.
    fn all_gather_parts<T>(&self, part: &[T], counts: &[usize]) -> Vec<T>
    where
        T: mpi::datatype::Equivalence + bytemuck::Pod,
    {
        let total: usize = counts.iter().sum();
        if total == 0 {
            // every rank knows the counts: nothing to exchange (Open MPI answered an
            // all-gather of empty byte buffers with MPI_ERR_ARG here)
            return vec![];
        }
        let mut all = vec![T::zeroed(); total];
        let c: Vec<Count> = counts.iter().map(|&n| n as Count).collect();
        let displs: Vec<Count> = c
            .iter()
            .scan(0, |at, &n| {
                let d = *at;
                *at += n;
                Some(d)
            })
            .collect();
        {
            let mut partition = PartitionMut::new(&mut all[..], c, &displs[..]);
            mpi::request::scope(|scope| {
                let r = self
                    .world
                    .immediate_all_gather_varcount_into(scope, part, &mut partition);
                self.finish("an all-gather", r);
            });
        }
        let size = std::mem::size_of::<T>();
        let sent = (std::mem::size_of_val(part) * (self.size - 1)) as u64;
        let received = (size * (total - part.len())) as u64;
        self.bytes.fetch_add(sent + received, Ordering::Relaxed);
        all
    }

    /// Every rank's buffer of one common length `n`, in rank order.
    fn all_buffers(&self, data: &[f32]) -> Vec<f32> {
        self.all_gather_parts(data, &vec![data.len(); self.size])
    }
}

/// Polls an immediate operation on `comm` until it completes; past `timeout`, aborts the job.
fn wait<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
    comm: &SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    what: &str,
    mut request: mpi::request::Request<'a, D, S>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match request.test() {
            Ok(_) => return,
            Err(pending) => request = pending,
        }
        if Instant::now() > deadline {
            eprintln!(
                "error: rank {rank} of {size}: {what} waited more than {:.0} s for the other \
                 ranks ({TIMEOUT_ENV})",
                timeout.as_secs_f64()
            );
            comm.abort(1);
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// The bytes a pipeline stage's buffered sends can hold at once under `config` (`p` stages ×
/// `replicas`): every micro-batch's activations one way and gradients the other (the most a
/// schedule sends before it receives), or an evaluation batch's, with MPI's per-message
/// overhead; attach it with `Universe::set_buffer_size` before the run.
pub fn send_buffer_bytes(
    config: &crate::train::TrainConfig,
    p: usize,
    replicas: usize,
) -> Result<usize> {
    let (micro, m) = super::pipeline::micro_batching(config, p, replicas)?;
    let rows = micro.max(config.micro_batch());
    let message = rows * config.gpt.block_size * config.gpt.n_embd * 4;
    Ok(2 * (m + 1) * (message + 1024))
}

/// A communicator shared by a process's ports.
struct Shared(SimpleCommunicator);

// SAFETY: as for `Mpi`: one thread of the process uses the ports, one call at a time.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// A pipeline stage's [`Port`] to a neighbouring stage in another process: point-to-point
/// messages of bytes, polled against the same deadline as the collectives.
pub struct MpiPort {
    comm: Arc<Shared>,
    peer: usize,
    rank: usize,
    size: usize,
    timeout: Duration,
}

impl Port for MpiPort {
    /// A buffered send (`MPI_Bsend`, into the buffer the process attached: see
    /// [`send_buffer_bytes`]): it returns once the bytes are copied, as a channel's send does. A
    /// schedule sends activations on before it receives the gradients coming back (1F1B's
    /// warm-up, GPipe's whole forward), so a send that waited for its receive (MPI's
    /// rendezvous past a few KiB) would deadlock two stages each sending to the other.
    fn send(&self, v: Vec<u8>) -> Result<()> {
        self.comm
            .0
            .process_at_rank(self.peer as i32)
            .buffered_send(&v[..]);
        Ok(())
    }

    fn recv(&self, size: usize) -> Result<Vec<u8>> {
        let comm = &self.comm.0;
        let mut v = vec![0u8; size];
        mpi::request::scope(|scope| {
            let r = comm
                .process_at_rank(self.peer as i32)
                .immediate_receive_into(scope, &mut v[..]);
            wait(
                comm,
                self.rank,
                self.size,
                self.timeout,
                "a receive from a stage",
                r,
            );
        });
        Ok(v)
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        if data.is_empty() {
            // every rank gives the same length: nothing to exchange
            return Ok(());
        }
        let all = self.all_buffers(data);
        sum_in_rank_order(all.chunks(data.len()), data);
        Ok(())
    }

    fn reduce_scatter(&self, data: &mut [f32], counts: &[usize]) -> Result<()> {
        assert_eq!(counts.len(), self.size, "a count per rank");
        let start: usize = counts[..self.rank].iter().sum();
        let mine = start..start + counts[self.rank];
        if data.is_empty() {
            return Ok(());
        }
        let all = self.all_buffers(data);
        let n = data.len();
        sum_in_rank_order(
            all.chunks(n).map(|v| &v[mine.clone()]),
            &mut data[start..start + counts[self.rank]],
        );
        Ok(())
    }

    fn all_gather(&self, data: &mut [u8], counts: &[usize]) -> Result<()> {
        assert_eq!(counts.len(), self.size, "a count per rank");
        let start: usize = counts[..self.rank].iter().sum();
        let all = self.all_gather_parts(&data[start..start + counts[self.rank]], counts);
        data.copy_from_slice(&all);
        Ok(())
    }

    fn broadcast(&self, data: &mut [u8], root: usize) -> Result<()> {
        mpi::request::scope(|scope| {
            let r = self
                .world
                .process_at_rank(root as i32)
                .immediate_broadcast_into(scope, data);
            self.finish("a broadcast", r);
        });
        let moved = data.len() as u64;
        let moved = if self.rank == root {
            moved * (self.size as u64 - 1)
        } else {
            moved
        };
        self.bytes.fetch_add(moved, Ordering::Relaxed);
        Ok(())
    }

    fn gather(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        // the lengths first (one u64 each), then the parts; every rank receives them (an
        // all-gather keeps one polled primitive), the root keeps them
        let lengths = self.all_gather_parts(&[data.len() as u64], &vec![1; self.size]);
        let counts: Vec<usize> = lengths.iter().map(|&n| n as usize).collect();
        let all = self.all_gather_parts(data, &counts);
        if self.rank != root {
            return Ok(None);
        }
        let mut at = 0;
        Ok(Some(
            counts
                .iter()
                .map(|&n| {
                    at += n;
                    all[at - n..at].to_vec()
                })
                .collect(),
        ))
    }

    fn barrier(&self) -> Result<()> {
        let r = self.world.immediate_barrier();
        self.finish("a barrier", r);
        Ok(())
    }

    fn abort(&self, why: &str) {
        eprintln!("error: rank {} of {}: {why}", self.rank, self.size);
        self.world.abort(1)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}
