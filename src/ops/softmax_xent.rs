//! Fused softmax + cross-entropy: per-row loss and dlogits in one pass.
//! Kernel: `shaders/softmax_xent.wgsl`.

use super::{dispatch_items, expect_numel, flag};
use crate::error::Result;
use crate::gpu::shaders::SOFTMAX_XENT_SUBGROUP_TEXTURES;
use crate::gpu::{Access, Category, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

const FORWARD_BACKWARD: Kernel = Kernel::new(Shader::SoftmaxXent, "forward_backward");
const FORWARD_BACKWARD_SG: Kernel = Kernel::new(Shader::SoftmaxXentSubgroup, "forward_backward");

/// A target with this value marks a padded row: no loss, no gradient.
pub const PAD: u32 = u32::MAX;

/// losses[r] = −log softmax(logits[r])[targets[r]] (0 for padded rows); when `dlogits` is given,
/// dlogits[r] = grad_scale · (softmax(logits[r]) − onehot(targets[r])). The caller picks
/// grad_scale, e.g. 1/(non-padded rows) for a mean loss.
/// logits: (R, V); targets: (R) u32; losses: (R); dlogits: (R, V).
pub fn softmax_xent(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    losses: &Tensor,
    dlogits: Option<&Tensor>,
    grad_scale: f32,
) -> Result<()> {
    softmax_xent_scaled(gpu, logits, targets, losses, dlogits, grad_scale, None)
}

/// [`softmax_xent`] with dlogits also multiplied by the loss scale `stats[guard::LOSS_SCALE]`
/// when `stats` is given (dynamic loss scaling: the scale lives on the GPU). Half-precision
/// logits and dlogits go through f32 views (the softmax and the loss compute in f32).
pub fn softmax_xent_scaled(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    losses: &Tensor,
    dlogits: Option<&Tensor>,
    grad_scale: f32,
    stats: Option<&Tensor>,
) -> Result<()> {
    let (Some(logits), Some(d)) = (
        super::widen(gpu, logits),
        super::written_opt(gpu, dlogits, false),
    ) else {
        return Ok(());
    };
    let logits: &Tensor = &logits;
    let dlogits = d.as_ref().map(|d| d.f32());
    super::expect_f32("softmax_xent", &[logits, losses]);
    super::expect_f32("softmax_xent", dlogits.as_slice());
    crate::tensor::expect_dtype("softmax_xent", targets, &[DType::U32]);
    let (rows, vocab) = (logits.rows(), logits.cols());
    expect_numel("softmax_xent targets", targets, rows);
    assert_eq!(
        targets.dtype(),
        DType::U32,
        "targets must be u32: {targets:?}"
    );
    expect_numel("softmax_xent losses", losses, rows);
    if let Some(d) = dlogits {
        expect_numel("softmax_xent dlogits", d, rows * vocab);
    }
    // Without dlogits the binding still needs a writable buffer of its own.
    let dummy;
    let dlogits_arg = match dlogits {
        Some(d) => d,
        None => {
            // four floats: the subgroup kernel binds it as vec4s
            dummy = Tensor::empty(gpu, "xent dummy", &[4], DType::F32, Category::Workspace)?;
            &dummy
        }
    };
    let params = [
        rows as u32,
        vocab as u32,
        grad_scale.to_bits(),
        flag(dlogits.is_some()),
        flag(stats.is_some()),
        crate::optim::guard::LOSS_SCALE as u32,
    ];
    let args = [
        (logits, Access::Read),
        (targets, Access::Read),
        (losses, Access::ReadWrite),
        (dlogits_arg, Access::ReadWrite),
        // (logits stand in for the stats when there is no loss scale: read, never used)
        (stats.unwrap_or(logits), Access::Read),
    ];
    if super::subgroup_rows(gpu, vocab) {
        // one 8-lane subgroup per row, no barriers; logits through textures where faster
        let form = &SOFTMAX_XENT_SUBGROUP_TEXTURES;
        let (kernel, per_group) = super::row_kernel(gpu, &FORWARD_BACKWARD_SG);
        super::dispatch_items_textured(gpu, &kernel, form, &[0], &args, &params, rows, per_group);
    } else {
        dispatch_items(gpu, &FORWARD_BACKWARD, &args, &params, rows, 1);
    }
    if let Some(d) = d {
        d.done(gpu);
    }
    Ok(())
}
