//! Batched matmul in the layouts a training step needs (A·B, A·Bᵀ, Aᵀ·B) with an optional fused
//! bias, and its backward. Kernel: `shaders/matmul.wgsl`.

use super::matmul_tune::{self, MatmulKernel, SUBGROUP_TILES, TILED_TILES};
use super::pad::{self, Padding};
use super::{expect_numel, flag};
use crate::gpu::shaders::{
    MATMUL_SUBGROUP_GELU, MATMUL_SUBGROUP_GELU_TEXTURES, MATMUL_SUBGROUP_TEXTURES,
    MATMUL_TILED_GELU,
};
use crate::gpu::{Access, Binding, Category, Gpu, Kernel, Shader};
use crate::tensor::{DType, Tensor};

const MATMUL_V4: Kernel = Kernel::new(Shader::Matmul, "matmul_v4");

/// A `matmul_subgroup.wgsl` entry point specialised for one tile shape and layout, with `$flag`
/// (ACCUMULATE, or GELU_GRAD in a GELU form) set to `$on` (its override constants).
macro_rules! subgroup_kernel {
    ($shader:expr, $entry:expr, $rows:expr, $cols:expr, $a_t:expr, $b_t:expr, $flag:expr, $on:expr) => {
        Kernel {
            shader: $shader,
            entry: $entry,
            overrides: &[
                ("ROW_GROUPS", $rows as f64),
                ("COL_GROUPS", $cols as f64),
                ("A_T", $a_t as u32 as f64),
                ("B_T", $b_t as u32 as f64),
                ($flag, $on as u32 as f64),
            ],
        }
    };
}

/// One tile shape and layout with `$flag` off and on: storing (C = A·B, + bias) and
/// accumulating (C += A·B), or a GELU form's forward and backward.
macro_rules! subgroup_epilogues {
    ($shader:expr, $entry:expr, $tile:expr, $a_t:expr, $b_t:expr, $flag:expr) => {
        [
            subgroup_kernel!($shader, $entry, $tile.0, $tile.1, $a_t, $b_t, $flag, false),
            subgroup_kernel!($shader, $entry, $tile.0, $tile.1, $a_t, $b_t, $flag, true),
        ]
    };
}

/// One tile shape in the three layouts: NN, NT, TN.
macro_rules! subgroup_layouts {
    ($shader:expr, $entry:expr, $tile:expr, $flag:expr) => {
        [
            subgroup_epilogues!($shader, $entry, $tile, false, false, $flag),
            subgroup_epilogues!($shader, $entry, $tile, false, true, $flag),
            subgroup_epilogues!($shader, $entry, $tile, true, false, $flag),
        ]
    };
}

/// Every tile shape, indexed like [`SUBGROUP_TILES`].
macro_rules! subgroup_table {
    ($shader:expr, $entry:expr, $flag:expr) => {
        [
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[0], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[1], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[2], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[3], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[4], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[5], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[6], $flag),
            subgroup_layouts!($shader, $entry, SUBGROUP_TILES[7], $flag),
        ]
    };
}

/// [tile][layout][accumulate], or [tile][layout][GELU backward] for the GELU forms
type SubgroupTable = [[[Kernel; 2]; 3]; SUBGROUP_TILES.len()];
static SUBGROUP_KERNELS: SubgroupTable =
    subgroup_table!(Shader::MatmulSubgroup, "matmul_subgroup", "ACCUMULATE");
static SUBGROUP_F16_KERNELS: SubgroupTable =
    subgroup_table!(Shader::MatmulSubgroupF16, "matmul_subgroup", "ACCUMULATE");
static SUBGROUP_TEXTURE_KERNELS: SubgroupTable = subgroup_table!(
    Shader::Textured(&MATMUL_SUBGROUP_TEXTURES),
    "matmul_subgroup",
    "ACCUMULATE"
);
static SUBGROUP_GELU_KERNELS: SubgroupTable = subgroup_table!(
    Shader::Gelu(&MATMUL_SUBGROUP_GELU),
    "matmul_subgroup",
    "GELU_GRAD"
);
static SUBGROUP_GELU_TEXTURE_KERNELS: SubgroupTable = subgroup_table!(
    Shader::Textured(&MATMUL_SUBGROUP_GELU_TEXTURES),
    "matmul_subgroup",
    "GELU_GRAD"
);

/// A `matmul_tiled.wgsl` kernel (or its GELU form) for one shape of [`TILED_TILES`] and layout,
/// with `$flag` (ACCUMULATE or GELU_GRAD) set to `$on`.
macro_rules! tiled_kernel {
    ($shader:expr, $tile:expr, $a_t:expr, $b_t:expr, $flag:expr, $on:expr) => {
        Kernel {
            shader: $shader,
            entry: "matmul_tiled",
            overrides: &[
                ("TM", TILED_TILES[$tile].1 .0 as f64),
                ("TN", TILED_TILES[$tile].1 .1 as f64),
                ("BK", TILED_TILES[$tile].1 .2 as f64),
                ("A_T", $a_t as u32 as f64),
                ("B_T", $b_t as u32 as f64),
                ($flag, $on as u32 as f64),
            ],
        }
    };
}

/// One tiled shape in the three layouts (NN, NT, TN), with `$flag` off and on.
macro_rules! tiled_layouts {
    ($shader:expr, $tile:expr, $flag:expr) => {
        [
            [
                tiled_kernel!($shader, $tile, false, false, $flag, false),
                tiled_kernel!($shader, $tile, false, false, $flag, true),
            ],
            [
                tiled_kernel!($shader, $tile, false, true, $flag, false),
                tiled_kernel!($shader, $tile, false, true, $flag, true),
            ],
            [
                tiled_kernel!($shader, $tile, true, false, $flag, false),
                tiled_kernel!($shader, $tile, true, false, $flag, true),
            ],
        ]
    };
}

/// Every tiled shape, indexed like [`TILED_TILES`].
macro_rules! tiled_table {
    ($shader:expr, $flag:expr) => {
        [
            tiled_layouts!($shader, 0, $flag),
            tiled_layouts!($shader, 1, $flag),
            tiled_layouts!($shader, 2, $flag),
            tiled_layouts!($shader, 3, $flag),
        ]
    };
}

/// [shape][layout][accumulate], or [shape][layout][GELU backward] for the GELU form
type TiledTable = [[[Kernel; 2]; 3]; TILED_TILES.len()];
static TILED_KERNELS: TiledTable = tiled_table!(Shader::MatmulTiled, "ACCUMULATE");
static TILED_GELU_KERNELS: TiledTable = tiled_table!(Shader::Gelu(&MATMUL_TILED_GELU), "GELU_GRAD");

/// Outputs per workgroup along each axis on the vec4 path (8 invocations × 8 outputs).
const TILE_V4: usize = 64;

/// Which operands are stored transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// C = A·B: A stored (M, K), B stored (K, N).
    NN,
    /// C = A·Bᵀ: A stored (M, K), B stored (N, K) (a Linear layer's weight as PyTorch keeps it).
    NT,
    /// C = Aᵀ·B: A stored (K, M), B stored (K, N).
    TN,
}

/// Dimensions of C[b] (M, N) = op(A[b]) (M, K) · op(B[b]) (K, N) for b < batch. A Linear layer
/// over (B, T, C) activations passes batch 1 and M = B·T.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub layout: Layout,
}

impl MatmulDims {
    pub fn new(m: usize, n: usize, k: usize, layout: Layout) -> Self {
        MatmulDims {
            batch: 1,
            m,
            n,
            k,
            layout,
        }
    }

    pub fn batched(batch: usize, m: usize, n: usize, k: usize, layout: Layout) -> Self {
        MatmulDims {
            batch,
            m,
            n,
            k,
            layout,
        }
    }
}

/// Records c (+)= op(a)·op(b) (+ bias).
/// a: (batch, M, K) or (batch, K, M) for TN; b: (batch, K, N) or (batch, N, K) for NT;
/// bias: (N); c: (batch, M, N). With `accumulate`, the product is added to c (bias must be None).
/// The kernel is the one the autotune chose for the layout (the first call on an adapter may run
/// the autotune: see [`matmul_tune`]).
pub fn matmul(
    gpu: &Gpu,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    accumulate: bool,
) {
    matmul_with(gpu, tuned_kernel(gpu), d, a, b, bias, c, accumulate);
}

/// The kernel the autotune chose (which runs any dims: see [`matmul_with`]).
fn tuned_kernel(gpu: &Gpu) -> MatmulKernel {
    matmul_tune::tuning(gpu).kernel
}

/// Records c = max(op(a)·op(b) + bias, 0): a Linear layer and its ReLU in one pass, on the
/// kernel the autotune chose (shapes as [`matmul`]).
pub fn matmul_bias_relu(
    gpu: &Gpu,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: &Tensor,
    c: &Tensor,
) {
    matmul_bias_relu_with(gpu, tuned_kernel(gpu), d, a, b, bias, c);
}

/// [`matmul_bias_relu`] with the kernel given.
pub fn matmul_bias_relu_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: &Tensor,
    c: &Tensor,
) {
    record(gpu, kernel, d, [a, b, c], Some(bias), Epilogue::BiasRelu);
}

/// What a matmul's stores do with A·B.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// c = A·B
    Store,
    /// c = A·B + bias
    Bias,
    /// c = max(A·B + bias, 0)
    BiasRelu,
    /// c += A·B
    Accumulate,
    /// c = A·B (+ bias), and the tensor (like c) = gelu(c)
    Gelu(&'a Tensor),
    /// c = (A·B) ⊙ gelu'(the tensor): the tensor (like c) is the GELU's input
    GeluGrad(&'a Tensor),
}

impl<'a> Epilogue<'a> {
    fn accumulates(self) -> bool {
        matches!(self, Epilogue::Accumulate)
    }

    /// The kernels' `epilogue` word: 0 store, 1 + bias, 2 + bias then ReLU.
    fn store_word(self, bias: bool) -> u32 {
        match self {
            Epilogue::BiasRelu => 2,
            _ => u32::from(bias),
        }
    }

    /// The GELU forms' second tensor and whether the pass is the backward (`GELU_GRAD`).
    fn aux(self) -> Option<(&'a Tensor, bool)> {
        match self {
            Epilogue::Gelu(t) => Some((t, false)),
            Epilogue::GeluGrad(t) => Some((t, true)),
            _ => None,
        }
    }
}

/// Records c = op(a)·op(b) (+ bias) and post = gelu(c): a Linear layer and the GELU after it
/// (c, the pre-activation, is kept for the backward). Shapes as [`matmul`]; post like c. Where
/// [`Gpu::gelu_in_stores`] the GELU runs in the matmul's stores, else the matmul and then the
/// elementwise GELU kernel: the same bits (with half-precision storage both read the f32
/// pre-activation before its rounding).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gelu(
    gpu: &Gpu,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    post: &Tensor,
) {
    matmul_gelu_with(gpu, tuned_kernel(gpu), d, a, b, bias, c, post);
}

/// [`matmul_gelu`] with the kernel given (the vec4 kernel has no GELU form and always runs the
/// elementwise kernel after it).
#[allow(clippy::too_many_arguments)]
pub fn matmul_gelu_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    post: &Tensor,
) {
    record(gpu, kernel, d, [a, b, c], bias, Epilogue::Gelu(post));
}

/// Records c = (op(a)·op(b)) ⊙ gelu'(pre): the gradient at a GELU's input, pre, from the layer
/// after the GELU (op(a)·op(b) is the gradient at the GELU's output). Shapes as [`matmul`]; pre
/// like c. Where [`Gpu::gelu_in_stores`] in the matmul's stores, else the product into a
/// workspace buffer and then the elementwise GELU backward: the same bits (with half-precision
/// storage both multiply the f32 product before its rounding).
pub fn matmul_gelu_grad(
    gpu: &Gpu,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    pre: &Tensor,
    c: &Tensor,
) {
    matmul_gelu_grad_with(gpu, tuned_kernel(gpu), d, a, b, pre, c);
}

/// [`matmul_gelu_grad`] with the kernel given (the vec4 kernel has no GELU form and always runs
/// the elementwise kernel after it).
pub fn matmul_gelu_grad_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    pre: &Tensor,
    c: &Tensor,
) {
    record(gpu, kernel, d, [a, b, c], None, Epilogue::GeluGrad(pre));
}

/// [`matmul`] with the kernel given (`Blocked`: the vec4 kernel). Every kernel takes any dims:
/// where N or K (or M, for TN) is not a multiple of 4 it runs on zero-padded copies (see
/// `record_padded`); a grid past the adapter's workgroup limit falls back to the vec4 kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    accumulate: bool,
) {
    assert!(
        !(accumulate && bias.is_some()),
        "matmul: a fused bias with accumulate is ambiguous"
    );
    let epilogue = match (bias, accumulate) {
        (Some(_), _) => Epilogue::Bias,
        (None, true) => Epilogue::Accumulate,
        (None, false) => Epilogue::Store,
    };
    record(gpu, kernel, d, [a, b, c], bias, epilogue);
}

/// Records one matmul dispatch: c (+)= op(a)·op(b) with the stores `epilogue` says. Half-precision
/// operands are read through f32 views and a half-precision c is rounded once at the end, so the
/// products of half values accumulate in f32 (`super::View`).
fn record(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    [a, b, c]: [&Tensor; 3],
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) {
    let (Some(a), Some(b), Some(bias), Some(c)) = (
        super::widen(gpu, a),
        super::widen(gpu, b),
        super::widen_opt(gpu, bias),
        super::Written::new(gpu, c, epilogue.accumulates()),
    ) else {
        return;
    };
    let abc = [&*a, &*b, c.f32()];
    let bias = bias.as_deref();
    match epilogue {
        // the GELU's output is written like c, its input read like a and b
        Epilogue::Gelu(post) => {
            let Some(post) = super::Written::new(gpu, post, false) else {
                return;
            };
            record_f32(gpu, kernel, d, abc, bias, Epilogue::Gelu(post.f32()));
            post.done(gpu);
        }
        Epilogue::GeluGrad(pre) => {
            let Some(pre) = super::widen(gpu, pre) else {
                return;
            };
            record_f32(gpu, kernel, d, abc, bias, Epilogue::GeluGrad(&pre));
        }
        epilogue => record_f32(gpu, kernel, d, abc, bias, epilogue),
    }
    c.done(gpu);
}

fn record_f32(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    [a, b, c]: [&Tensor; 3],
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) {
    super::expect_f32("matmul", &[a, b, c]);
    super::expect_f32("matmul", bias.as_slice());
    let MatmulDims {
        batch,
        m,
        n,
        k,
        layout,
    } = d;
    expect_numel("matmul a", a, batch * m * k);
    expect_numel("matmul b", b, batch * k * n);
    expect_numel("matmul c", c, batch * m * n);
    if let Some(bias) = bias {
        expect_numel("matmul bias", bias, n);
    }
    let aux = epilogue.aux();
    if let Some((t, _)) = aux {
        super::expect_f32("matmul (gelu)", &[t]);
        expect_numel("matmul gelu", t, batch * m * n);
        assert!(
            !matches!(epilogue, Epilogue::GeluGrad(_)) || bias.is_none(),
            "matmul_gelu_grad: no bias"
        );
    }
    if batch * m * n == 0 {
        return;
    }
    if aux.is_none() && batch == 1 && m <= GEMV_MAX_ROWS && k % 4 == 0 && layout == Layout::NT {
        return record_gemv(gpu, d, [a, b, c], bias, epilogue);
    }
    if let Some((t, grad)) = aux.filter(|_| !gpu.gelu_in_stores()) {
        return record_gelu_after(gpu, kernel, d, [a, b, c], bias, t, grad);
    }
    let padded = padded_dims(d);
    if padded != d {
        // (a refused scratch buffer is reported by the next flush, as every op's error)
        let _ = record_padded(gpu, kernel, d, padded, [a, b, c], bias, epilogue);
        return;
    }
    // the GELU forms' flag (GELU_GRAD) takes the place of ACCUMULATE, which they never set
    let flag_on = match aux {
        Some((_, grad)) => grad,
        None => epilogue.accumulates(),
    };
    let store_word = epilogue.store_word(bias.is_some());
    // the GELU forms' second output or input last (binding 5), bound only by them
    let all = [
        (a, Access::Read),
        (b, Access::Read),
        (bias.unwrap_or(a), Access::Read),
        (c, Access::ReadWrite),
        (aux.map_or(c, |(t, _)| t), Access::ReadWrite),
    ];
    let args = &all[..4 + usize::from(aux.is_some())];
    if let MatmulKernel::Texture {
        row_groups,
        col_groups,
    } = kernel
    {
        let tile = (row_groups, col_groups);
        if record_texture(gpu, tile, d, [a, b, c], bias, store_word, aux, flag_on) {
            return;
        }
    }
    // (the texture kernel falls back to its tile's buffer form: the same bits)
    let kernel = match kernel {
        MatmulKernel::Texture {
            row_groups,
            col_groups,
        } => MatmulKernel::Subgroup {
            row_groups,
            col_groups,
        },
        k => k,
    };
    if let MatmulKernel::Subgroup {
        row_groups,
        col_groups,
    } = kernel
    {
        let tile = (row_groups, col_groups);
        let table = if aux.is_some() {
            &SUBGROUP_GELU_KERNELS
        } else {
            &SUBGROUP_KERNELS
        };
        let kernel = &table[tile_index(tile)][matmul_tune::layout_index(layout)];
        let words = aligned_words(d, store_word);
        if dispatch_subgroup(gpu, &kernel[usize::from(flag_on)], tile, d, args, &words) {
            return;
        }
    }
    if let MatmulKernel::Tiled { rows, cols } = kernel {
        let shape = TILED_TILES
            .iter()
            .position(|(t, _)| *t == (rows, cols))
            .expect("a shape the table holds");
        let table = if aux.is_some() {
            &TILED_GELU_KERNELS
        } else {
            &TILED_KERNELS
        };
        let kernel = &table[shape][matmul_tune::layout_index(layout)][usize::from(flag_on)];
        let groups = [n.div_ceil(cols as usize), m.div_ceil(rows as usize), batch];
        if let Some(groups) = within_limit(gpu, groups) {
            gpu.dispatch(kernel, args, &aligned_words(d, store_word), groups);
            return;
        }
    }
    if let Some((t, grad)) = aux {
        // the vec4 kernel has no GELU form: the product, then the elementwise GELU kernel
        return record_gelu_after(gpu, MatmulKernel::Blocked, d, [a, b, c], bias, t, grad);
    }
    let accumulate = epilogue.accumulates();
    let u = |v: usize| u32::try_from(v).expect("matmul dimension fits in u32");
    let words = [
        u(m),
        u(n),
        u(k),
        u32::from(layout != Layout::TN),
        u32::from(layout == Layout::NT),
        u(m * k / 4),
        u(k * n / 4),
        u(m * n),
        store_word,
        flag(accumulate),
    ];
    let groups = [n.div_ceil(TILE_V4), m.div_ceil(TILE_V4), batch].map(u);
    gpu.dispatch(&MATMUL_V4, args, &words, groups);
}

/// A GELU epilogue as two passes (the vec4 kernel's, and every kernel's where
/// [`Gpu::gelu_in_stores`] is off): c = A·B (+ bias) then post = gelu(c), or the product into a
/// workspace matrix then c = product ⊙ gelu'(pre), on `kernel` and the elementwise GELU kernels.
/// The GELU forms' expressions are the elementwise kernels', so the bits are the same.
#[allow(clippy::too_many_arguments)]
fn record_gelu_after(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    [a, b, c]: [&Tensor; 3],
    bias: Option<&Tensor>,
    t: &Tensor,
    grad: bool,
) {
    if !grad {
        let epilogue = if bias.is_some() {
            Epilogue::Bias
        } else {
            Epilogue::Store
        };
        record_f32(gpu, kernel, d, [a, b, c], bias, epilogue);
        super::elementwise::gelu_forward(gpu, c, t);
        return;
    }
    let product = match Tensor::empty(
        gpu,
        "matmul (gelu grad)",
        c.shape(),
        DType::F32,
        Category::Workspace,
    ) {
        Ok(p) => p,
        Err(e) => return gpu.defer_error(e),
    };
    record_f32(gpu, kernel, d, [a, b, &product], None, Epilogue::Store);
    super::elementwise::gelu_backward(gpu, t, &product, c);
}

/// The dims every kernel runs: N and K rounded up to multiples of 4 (each reads B, and A along
/// K, four at a time), and M too where A is stored (K, M) and read four rows at a time (TN). In
/// the other layouts the kernels clamp their reads of A's rows and skip the stores past M, so a
/// ragged M (an evaluation's last, short batch) costs no copies.
fn padded_dims(d: MatmulDims) -> MatmulDims {
    let up = |v: usize| v.next_multiple_of(4);
    MatmulDims {
        m: if d.layout == Layout::TN { up(d.m) } else { d.m },
        n: up(d.n),
        k: up(d.k),
        ..d
    }
}

/// Records the matmul `d` on the aligned kernels at its [`padded_dims`] `p`: each operand with a
/// padded side (and the bias, when N is) is copied into a zero-padded workspace matrix
/// (`ops::pad`), and where C is padded its corner is cropped out of a padded product (added to
/// C for `Accumulate`). The padding adds fma(0, 0, acc) = acc, so C gets the bits of the same
/// sums unpadded. On lavapipe W-MLP's 10-class layer (256×10×1024 forward, 256×1024×10 and
/// 1024×10×256 backward) took 17-18 ms on the scalar-read ragged kernel this replaces and 4-6
/// ms padded on the texture kernel (`cargo bench --bench kernels`, both shapes in one period).
/// None, with nothing more recorded (the error kept for the next flush), when the device
/// refused a scratch buffer.
#[allow(clippy::too_many_arguments)]
fn record_padded(
    gpu: &Gpu,
    kernel: MatmulKernel,
    d: MatmulDims,
    p: MatmulDims,
    [a, b, c]: [&Tensor; 3],
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) -> Option<()> {
    let batch = d.batch;
    let ((a_rows, a_cols), (b_rows, b_cols)) = stored_shapes(d);
    let ((pa_rows, pa_cols), (pb_rows, pb_cols)) = stored_shapes(p);
    let a_pad = Padding::new(batch, (a_rows, a_cols), (pa_rows, pa_cols));
    let b_pad = Padding::new(batch, (b_rows, b_cols), (pb_rows, pb_cols));
    let pa = padded_copy(gpu, "matmul a (padded)", a, a_pad)?;
    let pb = padded_copy(gpu, "matmul b (padded)", b, b_pad)?;
    let pbias = match bias {
        Some(bias) => {
            let bias_pad = Padding::new(1, (1, d.n), (1, p.n));
            padded_copy(gpu, "matmul bias (padded)", bias, bias_pad)?
        }
        None => None,
    };
    let a = pa.as_ref().unwrap_or(a);
    let b = pb.as_ref().unwrap_or(b);
    let bias = pbias.as_ref().or(bias);
    let c_pad = Padding::new(batch, (d.m, d.n), (p.m, p.n));
    if c_pad.is_none() {
        // only K was padded: C is written in place
        record_f32(gpu, kernel, p, [a, b, c], bias, epilogue);
        return Some(());
    }
    let workspace = |name: &str| match Tensor::empty(
        gpu,
        name,
        &[batch, p.m, p.n],
        DType::F32,
        Category::Workspace,
    ) {
        Ok(t) => Some(t),
        Err(e) => {
            gpu.defer_error(e);
            None
        }
    };
    let pc = workspace("matmul c (padded)")?;
    let accumulate = epilogue.accumulates();
    match epilogue {
        // the GELU's output is cropped like C, its input padded like C
        Epilogue::Gelu(post) => {
            let ppost = workspace("matmul gelu (padded)")?;
            record_f32(gpu, kernel, p, [a, b, &pc], bias, Epilogue::Gelu(&ppost));
            pad::crop(gpu, c_pad, &ppost, post, false);
        }
        Epilogue::GeluGrad(pre) => {
            let ppre = padded_copy(gpu, "matmul gelu (padded)", pre, c_pad)?;
            let pre = ppre.as_ref().unwrap_or(pre);
            record_f32(gpu, kernel, p, [a, b, &pc], bias, Epilogue::GeluGrad(pre));
        }
        Epilogue::Accumulate => record_f32(gpu, kernel, p, [a, b, &pc], bias, Epilogue::Store),
        epilogue => record_f32(gpu, kernel, p, [a, b, &pc], bias, epilogue),
    }
    pad::crop(gpu, c_pad, &pc, c, accumulate);
    Some(())
}

/// (rows, cols) of A and of B as stored, for `d`'s layout.
fn stored_shapes(d: MatmulDims) -> ((usize, usize), (usize, usize)) {
    let MatmulDims { m, n, k, .. } = d;
    let a = match d.layout {
        Layout::NN | Layout::NT => (m, k),
        Layout::TN => (k, m),
    };
    let b = match d.layout {
        Layout::NN | Layout::TN => (k, n),
        Layout::NT => (n, k),
    };
    (a, b)
}

/// Some(None) where `p` pads nothing (`t` is used as it is), Some(a zero-padded workspace copy
/// of `t`) otherwise; None (the error kept for the next flush) when the device refused the
/// buffer.
fn padded_copy(gpu: &Gpu, name: &str, t: &Tensor, p: Padding) -> Option<Option<Tensor>> {
    if p.is_none() {
        return Some(None);
    }
    match Tensor::empty(
        gpu,
        name,
        &[p.batch, p.prows, p.pcols],
        DType::F32,
        Category::Workspace,
    ) {
        Ok(padded) => {
            pad::pad(gpu, p, t, &padded);
            Some(Some(padded))
        }
        Err(e) => {
            gpu.defer_error(e);
            None
        }
    }
}

/// Rows of A up to which an A·Bᵀ runs on `gemv` (a token at a time: a row per sequence).
const GEMV_MAX_ROWS: usize = 4;

const GEMV: Kernel = Kernel::new(Shader::Matmul, "gemv");

/// Records c (M, N) = a (M, K) · b (N, K)ᵀ with the epilogue on `gemv` (`shaders/matmul.wgsl`):
/// an invocation per row and 4 columns, any M and N, K a multiple of 4. SmolLM2's decode step
/// (210 matmuls of one row) took 435 ms on the block kernels, whose 8-row blocks are 7/8 empty
/// at M = 1, and 163 ms on this one (llvmpipe, 2 cores; each dispatch timed alone).
fn record_gemv(
    gpu: &Gpu,
    d: MatmulDims,
    [a, b, c]: [&Tensor; 3],
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) {
    let MatmulDims { m, n, k, .. } = d;
    let params = [
        m as u32,
        n as u32,
        k as u32,
        1,
        1,
        0,
        0,
        0,
        epilogue.store_word(bias.is_some()),
        u32::from(epilogue.accumulates()),
    ];
    let args = [
        (a, Access::Read),
        (b, Access::Read),
        (bias.unwrap_or(a), Access::Read),
        (c, Access::ReadWrite),
    ];
    super::dispatch_items(gpu, &GEMV, &args, &params, m * n.div_ceil(4), 64);
}

/// Rows of A below which the texture kernel's copies cost more than they save.
const TEXTURE_MIN_ROWS: usize = 16;

/// Records the texture kernel: A and B each copied into an operand texture (a transfer, in the
/// textures' flat layout: vec4 i of the buffer at texel (i % 256, i / 256)), then
/// `matmul_subgroup` reading them with `textureLoad`. False (nothing recorded) where a texture
/// would exceed the adapter's size, the grid its workgroup limit, or on a ledger twin (which
/// runs nothing).
#[allow(clippy::too_many_arguments)]
fn record_texture(
    gpu: &Gpu,
    tile: (u32, u32),
    d: MatmulDims,
    [a, b, c]: [&Tensor; 3],
    bias: Option<&Tensor>,
    store_word: u32,
    aux: Option<(&Tensor, bool)>,
    flag_on: bool,
) -> bool {
    let MatmulDims {
        batch,
        m,
        n,
        k,
        layout,
    } = d;
    // A copy moves every element of both operands once; the product reads each of B's m times.
    // With a few rows of A (a token decoded at a time: m = 1) the copy of B costs more than
    // the reads it speeds up: 210 such matmuls of SmolLM2's decode step took 402 ms on
    // textures plus 147 ms of copies (llvmpipe, 2 cores); they run on `gemv` now, and other
    // few-row products gain nothing from the copies either.
    if m < TEXTURE_MIN_ROWS {
        return false;
    }
    // vec4s of each operand, batches one after another
    let (a_texels, b_texels) = ((batch * m * k / 4) as u64, (batch * k * n / 4) as u64);
    let (Some(ta), Some(tb)) = (
        gpu.operand_texture(0, a_texels),
        gpu.operand_texture(1, b_texels),
    ) else {
        return false;
    };
    let Some(groups) = subgroup_grid(gpu, tile, d) else {
        return false;
    };
    // a row-by-row memcpy on lavapipe
    gpu.copy_to_texture(a, 0, a_texels, &ta);
    gpu.copy_to_texture(b, 0, b_texels, &tb);
    let table = if aux.is_some() {
        &SUBGROUP_GELU_TEXTURE_KERNELS
    } else {
        &SUBGROUP_TEXTURE_KERNELS
    };
    let kernel = &table[tile_index(tile)][matmul_tune::layout_index(layout)][usize::from(flag_on)];
    let bindings = [
        Binding::Texture(&ta),
        Binding::Texture(&tb),
        // an unread placeholder when there is no bias (c cannot be bound twice)
        Binding::Buffer(bias.unwrap_or(a), Access::Read),
        Binding::Buffer(c, Access::ReadWrite),
        Binding::Buffer(aux.map_or(c, |(t, _)| t), Access::ReadWrite),
    ];
    let bindings = &bindings[..4 + usize::from(aux.is_some())];
    gpu.dispatch_bound(kernel, bindings, &aligned_words(d, store_word), groups);
    true
}

/// The aligned subgroup entry point's uniform block: dims, batch strides in vec4s, epilogue.
fn aligned_words(d: MatmulDims, store_word: u32) -> [u32; 7] {
    let MatmulDims { m, n, k, .. } = d;
    let u = |v: usize| u32::try_from(v).expect("matmul dimension fits in u32");
    [
        u(m),
        u(n),
        u(k),
        u(m * k / 4),
        u(k * n / 4),
        u(m * n / 4),
        store_word,
    ]
}

/// Where `tile` sits in the subgroup kernel tables ([`SUBGROUP_TILES`]).
fn tile_index(tile: (u32, u32)) -> usize {
    SUBGROUP_TILES
        .iter()
        .position(|&t| t == tile)
        .expect("a tile the tables hold")
}

/// Records one `matmul_subgroup*` dispatch of `kernel` (at `tile`) with uniform block `words`;
/// false (nothing recorded) when the grid would exceed the adapter's workgroup limit.
fn dispatch_subgroup(
    gpu: &Gpu,
    kernel: &Kernel,
    (row_groups, col_groups): (u32, u32),
    d: MatmulDims,
    args: &[(&Tensor, Access)],
    words: &[u32],
) -> bool {
    let Some(groups) = subgroup_grid(gpu, (row_groups, col_groups), d) else {
        return false;
    };
    gpu.dispatch(kernel, args, words, groups);
    true
}

/// The subgroup kernel's grid at `tile` (its buffer and texture forms alike).
fn subgroup_grid(
    gpu: &Gpu,
    (row_groups, col_groups): (u32, u32),
    d: MatmulDims,
) -> Option<[u32; 3]> {
    within_limit(
        gpu,
        [
            d.m.div_ceil(8 * row_groups as usize),
            d.n.div_ceil(32 * col_groups as usize),
            d.batch,
        ],
    )
}

/// `groups` as a grid, or None past the adapter's workgroups per dimension.
fn within_limit(gpu: &Gpu, groups: [usize; 3]) -> Option<[u32; 3]> {
    let limit = gpu.limits().max_compute_workgroups_per_dimension as usize;
    groups
        .iter()
        .all(|&g| g <= limit)
        .then(|| groups.map(|g| u32::try_from(g).expect("within the limit")))
}

/// [`matmul`] with a and b stored as f16 (products and sums in f32, c f32): half the bytes read.
/// Needs the adapter's SHADER_F16, subgroups of at least 8 lanes, and M, N, K multiples of 4;
/// runs at the tile the autotune chose (4x1 when it chose another kernel).
#[allow(clippy::too_many_arguments)]
pub fn matmul_f16(
    gpu: &Gpu,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    accumulate: bool,
) -> crate::Result<()> {
    crate::tensor::expect_dtype("matmul_f16", a, &[DType::F16]);
    crate::tensor::expect_dtype("matmul_f16", b, &[DType::F16]);
    super::expect_f32("matmul_f16", &[c]);
    super::expect_f32("matmul_f16", bias.as_slice());
    let MatmulDims { batch, m, n, k, .. } = d;
    let unsupported = |why: &str| Err(crate::Error::Config(format!("f16 matmul: {why}")));
    if !gpu.features().contains(wgpu::Features::SHADER_F16) {
        return unsupported("this adapter has no SHADER_F16");
    }
    if !matmul_tune::subgroups_usable(gpu) {
        return unsupported("this adapter has no subgroups of 8 lanes");
    }
    if m % 4 != 0 || n % 4 != 0 || k % 4 != 0 {
        return unsupported("M, N and K must be multiples of 4");
    }
    assert!(
        a.dtype() == DType::F16 && b.dtype() == DType::F16 && c.dtype() == DType::F32,
        "matmul_f16: a and b f16, c f32"
    );
    expect_numel("matmul a", a, batch * m * k);
    expect_numel("matmul b", b, batch * k * n);
    expect_numel("matmul c", c, batch * m * n);
    if let Some(bias) = bias {
        expect_numel("matmul bias", bias, n);
        assert!(
            !accumulate,
            "matmul_f16: a fused bias with accumulate is ambiguous"
        );
    }
    let tile = match matmul_tune::tuning(gpu).kernel {
        MatmulKernel::Subgroup {
            row_groups,
            col_groups,
        }
        | MatmulKernel::Texture {
            row_groups,
            col_groups,
        } => (row_groups, col_groups),
        MatmulKernel::Blocked | MatmulKernel::Tiled { .. } => (4, 1),
    };
    let args = [
        (a, Access::Read),
        (b, Access::Read),
        // an unread placeholder when there is no bias (c cannot be bound twice)
        (bias.unwrap_or(a), Access::Read),
        (c, Access::ReadWrite),
    ];
    let kernel = &SUBGROUP_F16_KERNELS[tile_index(tile)][matmul_tune::layout_index(d.layout)];
    let words = aligned_words(d, flag(bias.is_some()));
    if !dispatch_subgroup(
        gpu,
        &kernel[usize::from(accumulate)],
        tile,
        d,
        &args,
        &words,
    ) {
        return unsupported("too many workgroups for this adapter");
    }
    Ok(())
}

/// Gradients of c = op(a)·op(b) + bias given dc: each requested one is written (or added to, with
/// `accumulate`). Shapes as in [`matmul`]; dbias (N) sums dc over every batch and row.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    gpu: &Gpu,
    d: MatmulDims,
    a: &Tensor,
    b: &Tensor,
    dc: &Tensor,
    da: Option<&Tensor>,
    db: Option<&Tensor>,
    dbias: Option<&Tensor>,
    accumulate: bool,
) {
    // (each product widens the half-precision operands it reads: see `record`)
    let MatmulDims {
        batch,
        m,
        n,
        k,
        layout,
    } = d;
    expect_numel("matmul_backward dc", dc, batch * m * n);
    let dims = |m, n, k, layout| MatmulDims::batched(batch, m, n, k, layout);
    if let Some(da) = da {
        match layout {
            // C = A·B: dA (M,K) = dC·Bᵀ
            Layout::NN => matmul(gpu, dims(m, k, n, Layout::NT), dc, b, None, da, accumulate),
            // C = A·Bᵀ: dA (M,K) = dC·B
            Layout::NT => matmul(gpu, dims(m, k, n, Layout::NN), dc, b, None, da, accumulate),
            // C = Aᵀ·B: dA (K,M) = B·dCᵀ
            Layout::TN => matmul(gpu, dims(k, m, n, Layout::NT), b, dc, None, da, accumulate),
        }
    }
    if let Some(db) = db {
        match layout {
            // C = A·B: dB (K,N) = Aᵀ·dC
            Layout::NN => matmul(gpu, dims(k, n, m, Layout::TN), a, dc, None, db, accumulate),
            // C = A·Bᵀ: dB (N,K) = dCᵀ·A
            Layout::NT => matmul(gpu, dims(n, k, m, Layout::TN), dc, a, None, db, accumulate),
            // C = Aᵀ·B: dB (K,N) = A·dC
            Layout::TN => matmul(gpu, dims(k, n, m, Layout::NN), a, dc, None, db, accumulate),
        }
    }
    if let Some(dbias) = dbias {
        super::reduce::colsum(gpu, dc, batch * m, n, dbias, accumulate);
    }
}
