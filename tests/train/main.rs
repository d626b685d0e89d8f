//! Training end to end: whole-model gradients against a float64 CPU model, learning, determinism,
//! resume, checkpoints, and the command line's handling of bad input.

#[path = "../kernels/reference.rs"]
#[allow(dead_code)]
mod reference;

mod cli;
mod ddp;
mod devices;
mod gradients;
mod lora;
mod memory;
mod mixed;
#[cfg(feature = "mpi")]
mod mpi;
mod params;
mod pipeline;
mod planner;
mod reliability;
mod second_order;
mod training;

use std::sync::OnceLock;
use wgtrain::Gpu;

/// A fresh directory under the system temp dir, removed (with its contents) when dropped, so a
/// passing test leaves nothing behind.
pub struct TmpDir(std::path::PathBuf);

impl TmpDir {
    pub fn new(name: &str) -> TmpDir {
        let dir = std::env::temp_dir().join(format!("wgtrain-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TmpDir(dir)
    }
}

impl std::ops::Deref for TmpDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TmpDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(None).unwrap_or_else(|e| panic!("training tests need an adapter: {e}"))
    })
}
