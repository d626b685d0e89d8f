//! Host ops: each records one or a few dispatches of a WGSL kernel; an op's forward and backward
//! sit side by side in the same module. Ops take their outputs preallocated (llm.c style) and panic
//! with the full shapes on a mismatch: those are programmer errors, not user input.

pub mod attention;
pub mod cast;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod kashin;
pub mod layernorm;
pub mod matmul;
pub mod matmul_tune;
pub mod qmatmul;
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

/// Records `vec4` (four elements per invocation) over elements 0 .. 4·(n/4), and `scalar` (one
/// per invocation) over the rest. Both get `words` followed by `first` = 4·(n/4), where the scalar
/// kernel starts (kernels taking four at a time ignore it). The two must do the same operations
/// per element, so that where the split falls never changes a result. On llvmpipe a vec4 read
/// costs about a quarter of four scalar ones.
pub(crate) fn dispatch_vec4_and_tail(
    gpu: &Gpu,
    (vec4, scalar): (&Kernel, &Kernel),
    args: &[(&Tensor, Access)],
    words: &[u32],
    n: usize,
    per_group: usize,
) {
    let head = n / 4 * 4;
    let mut words = words.to_vec();
    words.push(u32::try_from(head).expect("element count fits in u32"));
    if head > 0 {
        dispatch_items(gpu, vec4, args, &words, head / 4, per_group);
    }
    if head < n {
        dispatch_items(gpu, scalar, args, &words, n - head, per_group);
    }
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

/// Every op checks the dtypes it reads and writes: f32 here (an f16 or packed tensor would be
/// read as the wrong words), panicking with the op's and the tensor's names.
#[track_caller]
pub(crate) fn expect_f32(op: &str, tensors: &[&Tensor]) {
    for t in tensors {
        crate::tensor::expect_dtype(op, t, &[crate::tensor::DType::F32]);
    }
}

pub(crate) fn flag(b: bool) -> u32 {
    u32::from(b)
}
