//! What a training step's forward and backward tell about their parameters while they run,
//! layer group by layer group, so that a data-parallel strategy can act in the middle of them:
//! ZeRO 2 lends a gradient buffer to each group before the backward writes it, and once a
//! bucket's gradients are all written, reduce-scatters them and frees what this rank does not
//! own, so that the whole gradient never exists on one rank at once; ZeRO 3 also gathers a
//! group's values from their owners before the group's forward, and again before its
//! backward, and frees them after each.
//!
//! A model calls [`StepHooks::values_needed`] before the first op of a group's forward or
//! backward that reads its values and [`StepHooks::values_done`] after the last; a
//! recomputed forward calls them again.
//!
//! A model calls [`StepHooks::grads_needed`] with a group before the first op that writes any
//! of its gradients and [`StepHooks::grads_written`] after the last (a tied weight, like the
//! GPT's token embedding, is needed at the head and written after the embeddings). Both are
//! called once per micro-batch, in the same order on every rank, with every parameter of the
//! group (frozen ones included; a hook ignores those).

use super::Param;
use crate::error::Result;
use crate::gpu::Gpu;

pub trait StepHooks {
    /// Before a forward or backward reads `group`'s values.
    fn values_needed(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        let _ = (gpu, group);
        Ok(())
    }

    /// After the forward or backward has recorded its last read of `group`'s values.
    fn values_done(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        let _ = (gpu, group);
        Ok(())
    }

    /// Before the backward writes `group`'s gradients.
    fn grads_needed(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        let _ = (gpu, group);
        Ok(())
    }

    /// After the backward has written all of this micro-batch's gradients of `group`
    /// (recorded, not yet submitted).
    fn grads_written(&mut self, gpu: &Gpu, group: &mut [&mut Param]) -> Result<()> {
        let _ = (gpu, group);
        Ok(())
    }
}

/// One device's step: every gradient lives in its parameter.
pub struct NoHooks;

impl StepHooks for NoHooks {}
