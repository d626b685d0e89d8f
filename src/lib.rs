//! wgtrain: a portable GPU trainer for neural networks. Every kernel is a WGSL compute shader run
//! through wgpu, so the same code trains on Vulkan, Metal, DX12 and GL, and headless on Mesa's
//! lavapipe. See ARCHITECTURE.md for the layers.

pub mod bench;
pub mod data;
pub mod error;
pub mod files;
pub mod gpu;
pub mod import;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod parallel;
pub mod plot;
pub mod quant;
pub mod rng;
pub mod second_order;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Access, Category, Gpu};
pub use tensor::{DType, Tensor};
