//! A [`Tensor`] is a pooled device buffer with a name, a shape, an element type and the device it
//! lives on.

use crate::error::Result;
use crate::gpu::{Category, DeviceBuffer, DeviceId, Gpu, PooledBuffer};

/// Element types. Types narrower than 32 bits are stored packed, little end first, in the 32-bit
/// words every kernel reads (WGSL has no 8- or 16-bit storage without extensions): two f16 or
/// bf16 per u32, four 8-bit or eight 4-bit integers per u32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Indices and targets.
    U32,
    /// IEEE binary16. Kernels that compute in f16 need the adapter's SHADER_F16; the casts
    /// (`ops::cast`) convert with integer arithmetic and run everywhere.
    F16,
    /// bfloat16 (the top half of an f32), two per u32; converted with integer arithmetic.
    BF16,
    /// Signed 8-bit integers, four per u32 (quantized weights and codes).
    I8,
    /// Signed 4-bit integers, eight per u32 (quantized weights).
    I4,
}

impl DType {
    /// Bytes `numel` elements take, packed (a partial last byte counts whole).
    pub fn bytes_for(self, numel: usize) -> u64 {
        let n = numel as u64;
        match self {
            DType::F32 | DType::U32 => 4 * n,
            DType::F16 | DType::BF16 => 2 * n,
            DType::I8 => n,
            DType::I4 => n.div_ceil(2),
        }
    }

    /// The name checkpoints and messages use: "f32", "bf16", "i4", …
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U32 => "u32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I4 => "i4",
        }
    }

    pub const ALL: [DType; 6] = [
        DType::F32,
        DType::U32,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::I4,
    ];

    pub fn from_name(s: &str) -> Option<DType> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }
}

/// Panics (a programmer error) unless `t` is one of the `accepted` dtypes: every op calls this
/// for each tensor it reads or writes, so that an f16 tensor is never silently read as f32 words.
#[track_caller]
pub fn expect_dtype(op: &str, t: &Tensor, accepted: &[DType]) {
    if !accepted.contains(&t.dtype) {
        let names: Vec<_> = accepted.iter().map(|d| d.name()).collect();
        panic!(
            "{op}: tensor {:?} is {}, the op takes {}",
            t.name,
            t.dtype.name(),
            names.join(" or ")
        );
    }
}

pub struct Tensor {
    buf: PooledBuffer,
    shape: Vec<usize>,
    dtype: DType,
    name: String,
}

impl Tensor {
    /// A tensor whose contents are unspecified until a kernel writes all of it.
    pub fn empty(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        dtype: DType,
        category: Category,
    ) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        let bytes = dtype.bytes_for(numel);
        gpu.check_size(name, bytes)?;
        Ok(Tensor {
            buf: gpu.pool().alloc(name, bytes, category)?,
            shape: shape.to_vec(),
            dtype,
            name: name.to_string(),
        })
    }

    /// A float tensor of zeros (the clear is recorded, not run at once).
    pub fn zeros(gpu: &Gpu, name: &str, shape: &[usize], category: Category) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, DType::F32, category)?;
        gpu.clear(&t);
        Ok(t)
    }

    pub fn from_f32(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        data: &[f32],
        category: Category,
    ) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, DType::F32, category)?;
        assert_eq!(
            data.len(),
            t.numel(),
            "{name}: {} values for shape {shape:?}",
            data.len()
        );
        gpu.upload(&t, bytemuck::cast_slice(data));
        Ok(t)
    }

    pub fn from_u32(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        data: &[u32],
        category: Category,
    ) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, DType::U32, category)?;
        assert_eq!(
            data.len(),
            t.numel(),
            "{name}: {} values for shape {shape:?}",
            data.len()
        );
        gpu.upload(&t, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Half-precision values (rounded to nearest from whatever the caller had).
    pub fn from_f16(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        data: &[half::f16],
        category: Category,
    ) -> Result<Tensor> {
        let t = Self::empty(gpu, name, shape, DType::F16, category)?;
        assert_eq!(
            data.len(),
            t.numel(),
            "{name}: {} values for shape {shape:?}",
            data.len()
        );
        gpu.upload(&t, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A 16-bit float tensor (F16 or BF16) from its values' bit patterns.
    pub fn from_bits16(
        gpu: &Gpu,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bits: &[u16],
        category: Category,
    ) -> Result<Tensor> {
        assert!(
            matches!(dtype, DType::F16 | DType::BF16),
            "{name}: from_bits16 makes f16 or bf16 tensors, not {}",
            dtype.name()
        );
        let t = Self::empty(gpu, name, shape, dtype, category)?;
        assert_eq!(
            bits.len(),
            t.numel(),
            "{name}: {} values for shape {shape:?}",
            bits.len()
        );
        gpu.upload(&t, bytemuck::cast_slice(bits));
        Ok(t)
    }

    /// The bit patterns of a 16-bit float tensor (F16 or BF16; a sync point).
    pub fn to_bits16(&self, gpu: &Gpu) -> Result<Vec<u16>> {
        expect_dtype("to_bits16", self, &[DType::F16, DType::BF16]);
        Ok(bytemuck::pod_collect_to_vec(&gpu.read_bytes(self)?))
    }

    /// Reads the values back (a sync point).
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        assert_eq!(self.dtype, DType::F32, "{} is {:?}", self.name, self.dtype);
        Ok(bytemuck::cast_slice(&gpu.read_bytes(self)?).to_vec())
    }

    pub fn to_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        assert_eq!(self.dtype, DType::U32, "{} is {:?}", self.name, self.dtype);
        Ok(bytemuck::cast_slice(&gpu.read_bytes(self)?).to_vec())
    }

    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) {
        assert_eq!(self.dtype, DType::F32, "{} is {:?}", self.name, self.dtype);
        gpu.upload(self, bytemuck::cast_slice(data));
    }

    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) {
        assert_eq!(self.dtype, DType::U32, "{} is {:?}", self.name, self.dtype);
        gpu.upload(self, bytemuck::cast_slice(data));
    }

    /// A new tensor with the same contents (a recorded copy), charged to workspace.
    pub fn clone_on(&self, gpu: &Gpu) -> Result<Tensor> {
        let t = Tensor::empty(
            gpu,
            &self.name,
            &self.shape,
            self.dtype,
            Category::Workspace,
        )?;
        gpu.copy(self, &t);
        Ok(t)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> u64 {
        self.buf.bytes()
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn category(&self) -> Category {
        self.buf.category()
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }
    /// The device the tensor lives on.
    pub fn device(&self) -> DeviceId {
        self.buf.device()
    }
    /// Size of the last dimension (columns of a row-major matrix).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Product of every dimension but the last (rows of a row-major matrix).
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }
}

impl DeviceBuffer for Tensor {
    fn pooled(&self) -> &PooledBuffer {
        &self.buf
    }
    fn label(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{:?}:{:?}", self.name, self.shape, self.dtype)
    }
}
