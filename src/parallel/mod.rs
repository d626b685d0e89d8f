//! Several devices training one model. [`Collective`] is the communication a data-parallel step
//! needs, over host buffers (wgpu cannot share a buffer between devices, so every move goes
//! through the host): sums over f32, moves over bytes of whatever dtype the caller holds; [`InProcess`] implements it for ranks that are threads of one process,
//! each with its own [`crate::Gpu`]. Reductions sum in rank order (rank 0's values, plus rank
//! 1's, …), so a result never depends on thread timing. `ddp` is data parallelism on top.

pub mod ddp;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pipeline;
pub mod schedule;
pub mod trace;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// The collectives of data-parallel training. Every rank calls each one in the same order; a
/// rank that fails calls [`Collective::abort`], and every other rank's pending or next call
/// returns that error instead of waiting for it.
///
/// The dtype that travels is the caller's: the sums take f32 (gradients are f32 on a rank
/// whatever the working precision, so that n ranks sum as one device sums n micro-batches, bit
/// for bit; a half gradient would round each rank's part before the sum), the moves take bytes,
/// so a half working copy travels as half (ZeRO's gathers under mixed precision) and a pipeline's
/// half activations as half.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every rank's `data` replaced by the elementwise sum over ranks, summed in rank order.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()>;
    /// Rank r's segment of `data` (`counts[r]` values, after the segments of the ranks before
    /// it) replaced by that segment's elementwise sum over ranks, in rank order; the rest of
    /// `data` is left as it was. Every rank gives the same `counts`.
    fn reduce_scatter(&self, data: &mut [f32], counts: &[usize]) -> Result<()>;
    /// Every rank's `data` gets each rank r's segment (`counts[r]` bytes, in rank order) from
    /// rank r ([`Collective::reduce_scatter`] undone, in any dtype).
    fn all_gather(&self, data: &mut [u8], counts: &[usize]) -> Result<()>;
    /// Every rank's `data` replaced by `root`'s.
    fn broadcast(&self, data: &mut [u8], root: usize) -> Result<()>;
    /// `root` receives every rank's `data` (of any length), in rank order; others get None.
    fn gather(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>>;
    /// Waits until every rank has arrived.
    fn barrier(&self) -> Result<()>;
    /// Stops the group: this rank failed with `why`.
    fn abort(&self, why: &str);
    /// Bytes this rank has sent and received through the collectives so far.
    fn bytes(&self) -> u64;
}

/// `out` = parts[0] + parts[1] + … elementwise, added in that order (f32 addition is not
/// associative, so every reduction that must give the same bits sums this way).
pub fn sum_in_rank_order<'a>(parts: impl IntoIterator<Item = &'a [f32]>, out: &mut [f32]) {
    let mut parts = parts.into_iter();
    out.copy_from_slice(parts.next().expect("at least one rank"));
    for other in parts {
        assert_eq!(other.len(), out.len(), "ranks gave different sizes");
        for (d, v) in out.iter_mut().zip(other) {
            *d += v;
        }
    }
}

struct Gate {
    generation: u64,
    arrived: usize,
    aborted: Option<String>,
}

struct Shared {
    size: usize,
    /// Each rank's contribution to the collective in progress, as bytes.
    slots: Mutex<Vec<Vec<u8>>>,
    gate: Mutex<Gate>,
    wake: Condvar,
}

/// One rank of a group of threads in this process.
pub struct InProcess {
    rank: usize,
    shared: Arc<Shared>,
    bytes: AtomicU64,
}

impl InProcess {
    /// A group of `size` ranks, one handle per rank (give each to its thread).
    pub fn group(size: usize) -> Vec<InProcess> {
        assert!(size >= 1, "a group has at least one rank");
        let shared = Arc::new(Shared {
            size,
            slots: Mutex::new(vec![vec![]; size]),
            gate: Mutex::new(Gate {
                generation: 0,
                arrived: 0,
                aborted: None,
            }),
            wake: Condvar::new(),
        });
        (0..size)
            .map(|rank| InProcess {
                rank,
                shared: shared.clone(),
                bytes: AtomicU64::new(0),
            })
            .collect()
    }

    /// Posts `data`, then replaces `data[range]` by that range's rank-order sum over the ranks'
    /// posts (the all-reduce's whole buffer, the reduce-scatter's own segment).
    fn sum_range(&self, data: &mut [f32], range: std::ops::Range<usize>) -> Result<()> {
        self.shared.slots.lock().unwrap()[self.rank] = bytemuck::cast_slice(data).to_vec();
        self.barrier()?;
        let bytes = 4 * range.start..4 * range.end;
        let parts: Vec<Vec<f32>> = self
            .shared
            .slots
            .lock()
            .unwrap()
            .iter()
            .map(|v| bytemuck::pod_collect_to_vec(&v[bytes.clone()]))
            .collect();
        sum_in_rank_order(parts.iter().map(|v| &v[..]), &mut data[range.clone()]);
        // nobody refills the slots before everyone has read them
        self.barrier()
    }

    /// This rank's segment of a buffer of `len` values (or bytes) split by `counts`.
    fn segment(&self, len: usize, counts: &[usize]) -> std::ops::Range<usize> {
        assert_eq!(counts.len(), self.shared.size, "a count per rank");
        assert_eq!(
            counts.iter().sum::<usize>(),
            len,
            "the counts cover the data"
        );
        let start: usize = counts[..self.rank].iter().sum();
        start..start + counts[self.rank]
    }

    fn aborted(why: &str) -> Error {
        Error::Device(format!("another rank failed: {why}"))
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn barrier(&self) -> Result<()> {
        let mut g = self.shared.gate.lock().unwrap();
        if let Some(why) = &g.aborted {
            return Err(Self::aborted(why));
        }
        let generation = g.generation;
        g.arrived += 1;
        if g.arrived == self.shared.size {
            g.arrived = 0;
            g.generation += 1;
            self.shared.wake.notify_all();
            return Ok(());
        }
        while g.generation == generation && g.aborted.is_none() {
            g = self.shared.wake.wait(g).unwrap();
        }
        match &g.aborted {
            Some(why) if g.generation == generation => Err(Self::aborted(why)),
            _ => Ok(()),
        }
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        self.sum_range(data, 0..data.len())?;
        // what a ring all-reduce moves per rank: 2·(n−1)/n of the buffer each way
        let n = self.shared.size as u64;
        let moved = 2 * (n - 1) * 4 * data.len() as u64 / n.max(1);
        self.bytes.fetch_add(2 * moved, Ordering::Relaxed);
        Ok(())
    }

    fn reduce_scatter(&self, data: &mut [f32], counts: &[usize]) -> Result<()> {
        let mine = self.segment(data.len(), counts);
        self.sum_range(data, mine.clone())?;
        // each rank sends every other rank its part of that rank's segment and receives its
        // own segment's parts: (n−1)/n of the buffer each way when the segments are even
        let sent = 4 * (data.len() - mine.len()) as u64;
        let received = 4 * (mine.len() * (self.shared.size - 1)) as u64;
        self.bytes.fetch_add(sent + received, Ordering::Relaxed);
        Ok(())
    }

    fn all_gather(&self, data: &mut [u8], counts: &[usize]) -> Result<()> {
        let mine = self.segment(data.len(), counts);
        self.shared.slots.lock().unwrap()[self.rank] = data[mine.clone()].to_vec();
        self.barrier()?;
        {
            let slots = self.shared.slots.lock().unwrap();
            let mut at = 0;
            for (r, part) in slots.iter().enumerate() {
                if r != self.rank {
                    data[at..at + part.len()].copy_from_slice(part);
                }
                at += part.len();
            }
        }
        self.barrier()?;
        // its segment to every other rank; every other segment from its owner
        let sent = (mine.len() * (self.shared.size - 1)) as u64;
        let received = (data.len() - mine.len()) as u64;
        self.bytes.fetch_add(sent + received, Ordering::Relaxed);
        Ok(())
    }

    fn broadcast(&self, data: &mut [u8], root: usize) -> Result<()> {
        if self.rank == root {
            self.shared.slots.lock().unwrap()[root] = data.to_vec();
        }
        self.barrier()?;
        if self.rank != root {
            data.copy_from_slice(&self.shared.slots.lock().unwrap()[root]);
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        } else {
            let sent = data.len() as u64 * (self.shared.size as u64 - 1);
            self.bytes.fetch_add(sent, Ordering::Relaxed);
        }
        self.barrier()
    }

    fn gather(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        self.shared.slots.lock().unwrap()[self.rank] = data.to_vec();
        self.barrier()?;
        let all = (self.rank == root).then(|| self.shared.slots.lock().unwrap().clone());
        let moved = match &all {
            // the root receives everyone else's part
            Some(all) => all.iter().map(|v| v.len() as u64).sum::<u64>() - data.len() as u64,
            None => data.len() as u64,
        };
        self.bytes.fetch_add(moved, Ordering::Relaxed);
        self.barrier()?;
        Ok(all)
    }

    fn abort(&self, why: &str) {
        let mut g = self.shared.gate.lock().unwrap();
        if g.aborted.is_none() {
            g.aborted = Some(why.to_string());
        }
        self.shared.wake.notify_all();
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on every rank of an in-process group of `n`, one thread each.
    fn on_ranks<T: Send>(n: usize, f: impl Fn(&InProcess) -> T + Sync) -> Vec<T> {
        let group = InProcess::group(n);
        std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = group.iter().map(|c| s.spawn(move || f(c))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn reduce_scatter_sums_each_segment_in_rank_order_and_all_gather_restores_the_rest() {
        // uneven segments, one empty; values whose sum depends on the order of addition
        let counts = [3, 0, 2];
        let data =
            |r: usize| -> Vec<f32> { (0..5).map(|i| [1e8, 1.0, -1e8][r] + i as f32).collect() };
        let out = on_ranks(3, |c| {
            let mut v = data(c.rank());
            c.reduce_scatter(&mut v, &counts).unwrap();
            let reduced = v.clone();
            let bytes: Vec<usize> = counts.iter().map(|n| 4 * n).collect();
            c.all_gather(bytemuck::cast_slice_mut(&mut v), &bytes)
                .unwrap();
            (reduced, v, c.bytes())
        });
        let sum = |i: usize| (data(0)[i] + data(1)[i]) + data(2)[i];
        // rank 0 owns 0..3, rank 2 owns 3..5; outside its segment a rank keeps its own values
        assert_eq!(out[0].0[..3], [sum(0), sum(1), sum(2)]);
        assert_eq!(out[0].0[3..], data(0)[3..]);
        assert_eq!(out[1].0, data(1));
        assert_eq!(out[2].0[3..], [sum(3), sum(4)]);
        let whole: Vec<f32> = (0..5).map(sum).collect();
        for (r, o) in out.iter().enumerate() {
            assert_eq!(o.1, whole, "rank {r} after all_gather");
        }
        // rank 0: sent 2 values, received 3 x 2; then sent 3 x 2, received 2 (4 bytes each)
        assert_eq!(out[0].2, 4 * (2 + 6 + 6 + 2));
    }

    #[test]
    fn moves_carry_any_dtype_and_count_its_bytes() {
        // half words (bf16 bits) of uneven segments, gathered and broadcast as they are
        let counts = [2 * 3, 2];
        let out = on_ranks(2, |c| {
            let mut v: Vec<u16> = (0..4).map(|i| (100 * c.rank() + i) as u16).collect();
            c.all_gather(bytemuck::cast_slice_mut(&mut v), &counts)
                .unwrap();
            let gathered = v.clone();
            let mut b: Vec<u16> = vec![c.rank() as u16 + 7; 3];
            c.broadcast(bytemuck::cast_slice_mut(&mut b), 1).unwrap();
            let to_root = c.gather(&[c.rank() as u8; 3][..=c.rank()], 0).unwrap();
            (gathered, b, to_root, c.bytes())
        });
        for (r, o) in out.iter().enumerate() {
            assert_eq!(o.0, [0, 1, 2, 103], "rank {r} after all_gather");
            assert_eq!(o.1, [8, 8, 8], "rank {r} after broadcast");
        }
        assert_eq!(out[0].2, Some(vec![vec![0], vec![1, 1]]));
        assert_eq!(out[1].2, None);
        // rank 0: gather sent 6 received 2, broadcast received 6, gather received 2
        assert_eq!(out[0].3, 6 + 2 + 6 + 2);
        // rank 1: sent 2 received 6, broadcast sent 6, gather sent 2
        assert_eq!(out[1].3, 2 + 6 + 6 + 2);
    }
}
