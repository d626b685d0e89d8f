//! Host ops: each records one or a few dispatches of a WGSL kernel; an op's forward and backward
//! sit side by side in the same module. Ops take their outputs preallocated (llm.c style) and panic
//! with the full shapes on a mismatch: those are programmer errors, not user input.

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod layernorm;
pub mod matmul;
pub mod matmul_tune;
pub mod reduce;
pub mod softmax_xent;

use crate::gpu::{Access, Gpu, Kernel};
use crate::tensor::Tensor;

/// Records `kernel` over `n` independent items, `per_group` to a workgroup; the workgroup grid is
/// folded into 2-D past the per-dimension limit.
pub(crate) fn dispatch_items(
    gpu: &Gpu,
    kernel: &Kernel,
    args: &[(&Tensor, Access)],
    params: &[u32],
    n: usize,
    per_group: usize,
) {
    let groups = u32::try_from(n.div_ceil(per_group)).expect("workgroup count fits in u32");
    gpu.dispatch(kernel, args, params, gpu.groups_1d(groups));
}

/// Shape check with the full shapes in the panic message.
#[track_caller]
pub(crate) fn expect_numel(what: &str, t: &Tensor, numel: usize) {
    assert_eq!(
        t.numel(),
        numel,
        "{what}: {t:?} has {} elements, expected {numel}",
        t.numel()
    );
}

pub(crate) fn flag(b: bool) -> u32 {
    u32::from(b)
}
