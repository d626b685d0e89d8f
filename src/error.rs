//! The library's typed errors: everything a user's input or machine can cause.
//! Programmer errors (shape mismatches between ops) panic with the full shapes instead.

use std::path::PathBuf;

/// Errors raised at the library's boundaries: adapters, devices, buffers, files, configs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found{backends}. wgtrain needs a Vulkan, Metal or DX12 driver; on Linux \
         without a GPU install Mesa's software Vulkan driver (lavapipe): \
         `apt-get install mesa-vulkan-drivers`"
    )]
    NoAdapter {
        /// e.g. " for backend vulkan" when WGTRAIN_BACKEND restricted the search.
        backends: String,
    },

    #[error("no adapter matches {selector:?}; available adapters:\n{listing}")]
    AdapterNotFound { selector: String, listing: String },

    #[error("unknown backend {0:?} in WGTRAIN_BACKEND; expected one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),

    #[error("could not create a device on adapter {adapter:?}: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error(
        "tensor {name:?} needs {bytes} bytes, more than this adapter allows in one {what} \
         ({limit} bytes); use a smaller batch, sequence or model"
    )]
    TensorTooLarge {
        name: String,
        bytes: u64,
        limit: u64,
        what: &'static str,
    },

    #[error("{name}: index {index} at position {position} is out of range for size {size}")]
    IndexOutOfRange {
        name: String,
        position: usize,
        index: u64,
        size: u64,
    },

    #[error("{0}")]
    Config(String),

    #[error("{0}")]
    Data(String),

    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    /// A model file from elsewhere (GGUF, Hugging Face) that is damaged or not what it claims.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },

    #[error("GPU readback failed: {0}")]
    Readback(String),

    #[error(
        "the device is out of memory allocating {bytes} bytes for tensor {tensor:?}; use a \
         smaller batch (or --micro-batch-size), sequence or model, or recompute activations"
    )]
    OutOfMemory { tensor: String, bytes: u64 },

    /// The device refused work: a validation error from wgpu (an invalid dispatch, buffer or
    /// pipeline), or a lost device.
    #[error("GPU device error: {0}")]
    Device(String),

    /// Refused before anything is allocated: the planned bytes exceed the device or a budget.
    #[error(
        "{what} needs {needed} bytes ({needed_mib:.1} MiB), more than {limit_name} \
         ({limit} bytes, {limit_mib:.1} MiB); {hint}"
    )]
    DoesNotFit {
        /// What to change, e.g. "use a smaller batch".
        hint: &'static str,
        what: String,
        needed: u64,
        needed_mib: f64,
        limit: u64,
        limit_mib: f64,
        limit_name: String,
    },

    /// A run diverged: a non-finite loss, gradient or weight.
    #[error("{0}")]
    NonFinite(String),

    /// The OS error is part of the message, not a `source`, so an error chain printed whole
    /// (`{:#}`) says it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
