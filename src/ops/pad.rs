//! Batches of row-major matrices moved into a padded layout and back (`shaders/pad.wgsl`): how
//! [`super::matmul`] runs dims that are not multiples of 4 on its aligned kernels. The padding
//! is zeros, so a padded k step adds fma(0, 0, acc) = acc and the padded product's corner holds
//! exactly the bits of the product itself.

use super::{dispatch_items, expect_numel, flag};
use crate::gpu::{Access, Gpu, Kernel, Shader};
use crate::tensor::Tensor;

const PAD: Kernel = Kernel::new(Shader::Pad, "pad");
const CROP: Kernel = Kernel::new(Shader::Pad, "crop");
const COLUMNS: Kernel = Kernel::new(Shader::Pad, "columns");

/// A batch of `batch` row-major matrices of `rows` × `cols` held in a layout of `prows` ×
/// `pcols` (each at least as large).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padding {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
    pub prows: usize,
    pub pcols: usize,
}

impl Padding {
    /// `rows` × `cols` matrices held as `prows` × `pcols` ones.
    pub fn new(batch: usize, (rows, cols): (usize, usize), (prows, pcols): (usize, usize)) -> Self {
        Padding {
            batch,
            rows,
            cols,
            prows,
            pcols,
        }
    }

    /// Whether the padded layout is the original one.
    pub fn is_none(&self) -> bool {
        self.rows == self.prows && self.cols == self.pcols
    }

    fn words(&self, total: usize, accumulate: bool) -> [u32; 6] {
        assert!(
            self.prows >= self.rows && self.pcols >= self.cols,
            "padding {self:?}: the padded layout is smaller"
        );
        let u = |v: usize| u32::try_from(v).expect("pad dimension fits in u32");
        [
            u(self.rows),
            u(self.cols),
            u(self.prows),
            u(self.pcols),
            u(total),
            flag(accumulate),
        ]
    }
}

/// Records dst (batch, prows, pcols) = src (batch, rows, cols) with zeros past its edges.
pub fn pad(gpu: &Gpu, p: Padding, src: &Tensor, dst: &Tensor) {
    super::expect_f32("pad", &[src, dst]);
    expect_numel("pad src", src, p.batch * p.rows * p.cols);
    expect_numel("pad dst", dst, p.batch * p.prows * p.pcols);
    let total = dst.numel();
    let args = [(src, Access::Read), (dst, Access::ReadWrite)];
    dispatch_items(gpu, &PAD, &args, &p.words(total, false), total, 256);
}

/// Records dst (batch, rows, cols) = the top-left corner of each matrix of src (batch, prows,
/// pcols), or dst + that corner with `accumulate`.
pub fn crop(gpu: &Gpu, p: Padding, src: &Tensor, dst: &Tensor, accumulate: bool) {
    super::expect_f32("crop", &[src, dst]);
    expect_numel("crop src", src, p.batch * p.prows * p.pcols);
    expect_numel("crop dst", dst, p.batch * p.rows * p.cols);
    let total = dst.numel();
    let args = [(src, Access::Read), (dst, Access::ReadWrite)];
    dispatch_items(gpu, &CROP, &args, &p.words(total, accumulate), total, 256);
}

/// Records dst[dst_first + r, dst_col .. dst_col + width] = src[r, src_col .. src_col + width]
/// for every row r of src (same dtype): a block of columns placed into a wider tensor, taken out
/// of one, or appended to a KV cache at row `dst_first`. The bits move unchanged; half tensors
/// move in pairs, so their widths and offsets must be even.
pub fn columns(
    gpu: &Gpu,
    src: &Tensor,
    src_col: usize,
    dst: &Tensor,
    (dst_first, dst_col): (usize, usize),
    width: usize,
) {
    assert_eq!(src.dtype(), dst.dtype(), "columns: {src:?} into {dst:?}");
    let (rows, src_row, dst_row) = (src.rows(), src.cols(), dst.cols());
    assert!(
        dst_first + rows <= dst.rows(),
        "columns: {rows} rows from row {dst_first} of {dst:?}"
    );
    assert!(
        src_col + width <= src_row && dst_col + width <= dst_row,
        "columns: {width} from column {src_col} of {src:?} to {dst_col} of {dst:?}"
    );
    // elements per 32-bit word
    let per = (4 / src.dtype().bytes_for(1)) as usize;
    let words = |v: usize| {
        assert_eq!(
            v % per,
            0,
            "columns: {v} is not whole words of {:?}",
            src.dtype()
        );
        u32::try_from(v / per).expect("columns: fits in u32")
    };
    let params = [
        u32::try_from(rows).expect("columns: rows fit in u32"),
        words(width),
        words(src_row),
        words(src_col),
        words(dst_row),
        words(dst_col),
        u32::try_from(dst_first).expect("columns: rows fit in u32"),
    ];
    let args = [(src, Access::Read), (dst, Access::ReadWrite)];
    dispatch_items(gpu, &COLUMNS, &args, &params, rows * width / per, 256);
}
