//! Host ops: each records one or a few dispatches of a WGSL kernel; an op's forward and backward
//! sit side by side in the same module. Ops take their outputs preallocated (llm.c style) and panic
//! with the full shapes on a mismatch: those are programmer errors, not user input.

pub mod attention;
pub mod cast;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod ggml;
pub mod kashin;
pub mod layernorm;
pub mod matmul;
pub mod matmul_tune;
pub mod pad;
pub mod qmatmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod softmax_xent;

use crate::gpu::{Access, Binding, Category, Gpu, Kernel, OperandTexture, Shader, TextureForm};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

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

/// Whether rows `width` wide run on one 8-lane subgroup each (the `*_subgroup` kernels): the
/// adapter has subgroups of at least 8 lanes and a row is whole vec4s.
pub(crate) fn subgroup_rows(gpu: &Gpu, width: usize) -> bool {
    width % 4 == 0 && matmul_tune::subgroups_usable(gpu)
}

/// Row walks per workgroup of the one-cluster-a-row kernels (`*_subgroup.wgsl`: LayerNorm, the
/// attention softmax and its backward, softmax-xent), whose workgroups take
/// [`Gpu::row_clusters`] rows at a time and walk on from their index in steps of the workgroup
/// count. On CPU adapters every workgroup is a task for the driver's threads with a fixed cost,
/// so each takes eight rows: on lavapipe, LayerNorm over 768 and 3072 rows of 128 ran 18-25 %
/// faster forward and 14-26 % backward than with a row each (a throwaway harness timing 100
/// calls in one submit, medians of six rounds). GPUs take one step.
pub(crate) fn subgroup_rows_per_group(gpu: &Gpu) -> usize {
    if gpu.info().device_type == wgpu::DeviceType::Cpu {
        8
    } else {
        1
    }
}

/// `kernel` (a `*_subgroup.wgsl` row kernel) with its `CLUSTERS` constant for `gpu`, and the
/// rows one workgroup covers: [`Gpu::row_clusters`] at a time, [`subgroup_rows_per_group`]
/// times.
pub(crate) fn row_kernel(gpu: &Gpu, kernel: &Kernel) -> (Kernel, usize) {
    const ONE: &[(&str, f64)] = &[("CLUSTERS", 1.0)];
    const GPU: &[(&str, f64)] = &[("CLUSTERS", crate::gpu::ROW_CLUSTERS_GPU as f64)];
    assert!(
        kernel.overrides.is_empty(),
        "{}: a row kernel",
        kernel.entry
    );
    let clusters = gpu.row_clusters();
    let overrides = if clusters == 1 { ONE } else { GPU };
    let rows = clusters as usize * subgroup_rows_per_group(gpu);
    (
        Kernel {
            overrides,
            ..*kernel
        },
        rows,
    )
}

/// Inputs smaller than this many vec4s stay in their buffers on every adapter: on lavapipe each
/// copy into a texture is a command with a fixed cost (tens of µs), more than a small tensor's
/// reads save. W-GPT-S's 32 bias and gain vectors (128-512 floats) are Adam's.
pub(crate) const TEXTURE_MIN_TEXELS: u64 = 1024;

/// [`dispatch_items`] for a kernel with a texture form: `textured` lists the args (read-only,
/// read as vec4s from their start) that `form` reads from operand textures. Where the device
/// reads through textures ([`Gpu::texture_reads`]) and they hold [`TEXTURE_MIN_TEXELS`] vec4s or
/// more, each is copied into one and `form`'s kernel runs; elsewhere, or past the adapter's
/// texture size, `kernel` reads the buffers. Both forms
/// give the same bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch_items_textured(
    gpu: &Gpu,
    kernel: &Kernel,
    form: &'static TextureForm,
    textured: &[usize],
    args: &[(&Tensor, Access)],
    params: &[u32],
    n: usize,
    per_group: usize,
) {
    assert_eq!(
        form.base, kernel.shader,
        "{}: the texture form of another shader",
        form.name
    );
    let texels = |i: usize| (args[i].0.numel() / 4) as u64;
    let total: u64 = textured.iter().map(|&i| texels(i)).sum();
    if !gpu.texture_reads() || total < TEXTURE_MIN_TEXELS {
        return dispatch_items(gpu, kernel, args, params, n, per_group);
    }
    // one texture per distinct input (a unary elementwise op passes x as y too)
    let mut textures: Vec<(&Tensor, Arc<OperandTexture>)> = Vec::new();
    for &i in textured {
        let (t, access) = args[i];
        assert_eq!(
            access,
            Access::Read,
            "{}: a textured input is read-only",
            form.name
        );
        if textures.iter().any(|(u, _)| std::ptr::eq(*u, t)) {
            continue;
        }
        match gpu.operand_texture(textures.len() as u32, texels(i).max(1)) {
            Some(tex) => textures.push((t, tex)),
            None => return dispatch_items(gpu, kernel, args, params, n, per_group),
        }
    }
    for (t, tex) in &textures {
        gpu.copy_to_texture(*t, 0, (t.numel() / 4) as u64, tex);
    }
    let bindings: Vec<Binding> = args
        .iter()
        .enumerate()
        .map(|(i, (t, a))| {
            let tex = textures.iter().find(|(u, _)| std::ptr::eq(*u, *t));
            match tex {
                Some((_, tex)) if textured.contains(&i) => Binding::Texture(tex),
                _ => Binding::Buffer(*t, *a),
            }
        })
        .collect();
    let textured_kernel = Kernel {
        shader: Shader::Textured(form),
        ..*kernel
    };
    let groups = u32::try_from(n.div_ceil(per_group)).expect("workgroup count fits in u32");
    gpu.dispatch_bound(&textured_kernel, &bindings, params, gpu.groups_1d(groups));
}

/// Records `vec4` (four elements per invocation) over elements 0 .. 4·(n/4), and `scalar` (one
/// per invocation) over the rest. Both get `words` followed by `first` = 4·(n/4), where the scalar
/// kernel starts (kernels taking four at a time ignore it). The two must do the same operations
/// per element, so that where the split falls never changes a result. On llvmpipe a vec4 read
/// costs about a quarter of four scalar ones.
/// With `textured`, the vec4 kernel reads those args through `form`'s textures
/// ([`dispatch_items_textured`]).
pub(crate) fn dispatch_vec4_and_tail(
    gpu: &Gpu,
    (vec4, scalar): (&Kernel, &Kernel),
    textured: Option<(&'static TextureForm, &[usize])>,
    args: &[(&Tensor, Access)],
    words: &[u32],
    n: usize,
    per_group: usize,
) {
    let head = n / 4 * 4;
    let mut words = words.to_vec();
    words.push(u32::try_from(head).expect("element count fits in u32"));
    if head > 0 {
        match textured {
            Some((form, which)) => {
                dispatch_items_textured(gpu, vec4, form, which, args, &words, head / 4, per_group)
            }
            None => dispatch_items(gpu, vec4, args, &words, head / 4, per_group),
        }
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

/// An op's f32 view of a float tensor: the tensor itself when it is f32, else (f16, bf16) a
/// transient f32 copy, charged to workspace and freed when the view drops. This is how every op
/// reads half-precision storage (mixed precision): the kernel computes in f32 on the widened
/// values, which are exactly the stored ones, so the result equals a kernel that reads the
/// half values itself and accumulates in f32.
pub(crate) enum View<'a> {
    Same(&'a Tensor),
    Wide(Tensor),
}

impl std::ops::Deref for View<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        match self {
            View::Same(t) => t,
            View::Wide(t) => t,
        }
    }
}

fn is_half(t: &Tensor) -> bool {
    matches!(t.dtype(), DType::F16 | DType::BF16)
}

/// A transient f32 twin of the half tensor `t`, holding its values when `copy`. None when the
/// device refused the buffer: the error is kept for the next flush (ops record, they do not
/// fail) and the op records nothing.
fn wide_twin(gpu: &Gpu, t: &Tensor, copy: bool) -> Option<Tensor> {
    let name = format!("{} (f32)", t.name());
    match Tensor::empty(gpu, &name, t.shape(), DType::F32, Category::Workspace) {
        Ok(w) => {
            if copy {
                cast::cast(gpu, t, &w);
            }
            Some(w)
        }
        Err(e) => {
            gpu.defer_error(e);
            None
        }
    }
}

/// `t` as f32 for reading (see [`View`]).
pub(crate) fn widen<'a>(gpu: &Gpu, t: &'a Tensor) -> Option<View<'a>> {
    if is_half(t) {
        wide_twin(gpu, t, true).map(View::Wide)
    } else {
        Some(View::Same(t))
    }
}

/// [`widen`] of an optional tensor: Some(None) for None.
pub(crate) fn widen_opt<'a>(gpu: &Gpu, t: Option<&'a Tensor>) -> Option<Option<View<'a>>> {
    match t {
        Some(t) => widen(gpu, t).map(Some),
        None => Some(None),
    }
}

/// An op's f32 target for an output: the tensor itself when it is f32, else a transient f32 copy
/// that [`Written::done`] rounds into it (to nearest even, as `ops::cast`). `read`: the op adds
/// to what the output holds (accumulate), so the copy starts with its values.
pub(crate) struct Written<'a> {
    target: &'a Tensor,
    wide: Option<Tensor>,
}

impl<'a> Written<'a> {
    pub(crate) fn new(gpu: &Gpu, target: &'a Tensor, read: bool) -> Option<Written<'a>> {
        let wide = if is_half(target) {
            Some(wide_twin(gpu, target, read)?)
        } else {
            None
        };
        Some(Written { target, wide })
    }

    /// The tensor the op writes.
    pub(crate) fn f32(&self) -> &Tensor {
        self.wide.as_ref().unwrap_or(self.target)
    }

    /// Records the rounding into the half-precision target (nothing for an f32 one).
    pub(crate) fn done(self, gpu: &Gpu) {
        if let Some(w) = &self.wide {
            cast::cast(gpu, w, self.target);
        }
    }
}

/// [`Written::new`] of an optional output.
pub(crate) fn written_opt<'a>(
    gpu: &Gpu,
    t: Option<&'a Tensor>,
    read: bool,
) -> Option<Option<Written<'a>>> {
    match t {
        Some(t) => Written::new(gpu, t, read).map(Some),
        None => Some(None),
    }
}
