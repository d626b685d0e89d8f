//! The collectives over MPI (cargo feature `mpi`): one process per rank, launched by `mpirun`.
//!
//! Every reduction gathers the ranks' buffers and sums them on each rank in rank order, with
//! the same [`sum_in_rank_order`] the in-process backend uses, never `MPI_Allreduce` (whose
//! summation order is the implementation's): an MPI run gives the in-process run's bits. All
//! calls are built on two immediate (non-blocking) operations, an all-gather of variable-length
//! parts and a broadcast, polled against a deadline, so a rank that died or hangs stops the job
//! within the timeout ([`TIMEOUT_ENV`], default 120 s) instead of leaving the others waiting.
//! A rank that fails prints its error and calls `MPI_Abort`, which ends every rank.

use super::{sum_in_rank_order, Collective};
use crate::error::{Error, Result};
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;
use std::sync::atomic::{AtomicU64, Ordering};
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
        mut request: mpi::request::Request<'a, D, S>,
    ) {
        let deadline = Instant::now() + self.timeout;
        loop {
            match request.test() {
                Ok(_) => return,
                Err(pending) => request = pending,
            }
            if Instant::now() > deadline {
                self.abort(&format!(
                    "{what} waited more than {:.0} s for the other ranks ({TIMEOUT_ENV})",
                    self.timeout.as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Every rank's `part` (of any length, `counts[r]` for rank r), concatenated in rank order.
    fn all_gather_parts(&self, part: &[f32], counts: &[usize]) -> Vec<f32> {
        let total: usize = counts.iter().sum();
        let mut all = vec![0f32; total];
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
        let sent = 4 * (part.len() * (self.size - 1)) as u64;
        let received = 4 * (total - part.len()) as u64;
        self.bytes.fetch_add(sent + received, Ordering::Relaxed);
        all
    }

    /// Every rank's buffer of one common length `n`, in rank order.
    fn all_buffers(&self, data: &[f32]) -> Vec<f32> {
        self.all_gather_parts(data, &vec![data.len(); self.size])
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

    fn all_gather(&self, data: &mut [f32], counts: &[usize]) -> Result<()> {
        assert_eq!(counts.len(), self.size, "a count per rank");
        let start: usize = counts[..self.rank].iter().sum();
        let all = self.all_gather_parts(&data[start..start + counts[self.rank]], counts);
        data.copy_from_slice(&all);
        Ok(())
    }

    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<()> {
        mpi::request::scope(|scope| {
            let r = self
                .world
                .process_at_rank(root as i32)
                .immediate_broadcast_into(scope, data);
            self.finish("a broadcast", r);
        });
        let moved = 4 * data.len() as u64;
        let moved = if self.rank == root {
            moved * (self.size as u64 - 1)
        } else {
            moved
        };
        self.bytes.fetch_add(moved, Ordering::Relaxed);
        Ok(())
    }

    fn gather(&self, data: &[f32], root: usize) -> Result<Option<Vec<Vec<f32>>>> {
        // the lengths first (one value each), then the parts; every rank receives them (an
        // all-gather keeps one polled primitive), the root keeps them
        // (a length travels as the bits of a u32, exact past f32's 2^24)
        let lengths = self.all_buffers(&[f32::from_bits(data.len() as u32)]);
        let counts: Vec<usize> = lengths.iter().map(|n| n.to_bits() as usize).collect();
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
