//! A [`Tensor`] is a pooled device buffer with a name, a shape and an element type.

use crate::error::Result;
use crate::gpu::{Category, Gpu, PooledBuffer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// Indices and targets.
    U32,
    /// IEEE half precision (kernels that read it need the adapter's SHADER_F16).
    F16,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
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
        let bytes = numel as u64 * dtype.size();
        gpu.check_size(name, bytes)?;
        Ok(Tensor {
            buf: gpu.pool().alloc(name, bytes, category),
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
    /// Size of the last dimension (columns of a row-major matrix).
    pub fn cols(&self) -> usize {
        *self.shape.last().unwrap_or(&1)
    }
    /// Product of every dimension but the last (rows of a row-major matrix).
    pub fn rows(&self) -> usize {
        self.numel() / self.cols().max(1)
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{:?}:{:?}", self.name, self.shape, self.dtype)
    }
}
