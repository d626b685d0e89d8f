//! Training end to end: whole-model gradients against a float64 CPU model, learning, determinism,
//! resume, checkpoints, and the command line's handling of bad input.

#[path = "../kernels/reference.rs"]
#[allow(dead_code)]
mod reference;

mod cli;
mod ddp;
mod devices;
mod finetune;
mod gguf;
mod gradients;
mod hf;
mod lora;
mod matrix;
mod memory;
mod mixed;
#[cfg(feature = "mpi")]
mod mpi;
mod params;
mod pipeline;
mod planner;
mod reliability;
mod second_order;
mod sharded;
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

/// What `fit` reports on the lead rank, as lines (losses by their bits), keeping a copy of each
/// checkpoint as it was when written.
pub struct Recorder {
    lines: std::sync::Mutex<Vec<String>>,
    keep: std::path::PathBuf,
}

impl Recorder {
    pub fn new(keep: std::path::PathBuf) -> Recorder {
        std::fs::create_dir_all(&keep).unwrap();
        Recorder {
            lines: Default::default(),
            keep,
        }
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.lines.lock().unwrap())
    }
}

impl wgtrain::train::Observer for Recorder {
    fn observe(&self, event: wgtrain::train::Event<'_>) -> wgtrain::Result<()> {
        let line = match event {
            wgtrain::train::Event::Step(s) => {
                format!("step {} loss {:08x}", s.step, s.loss.to_bits())
            }
            wgtrain::train::Event::Eval { step, result } => {
                format!("eval {step} loss {:08x}", result.loss.to_bits())
            }
            wgtrain::train::Event::Checkpoint { step, path, .. } => {
                // one file, whatever layout wrote it
                let copy = self.keep.join(format!("at{step}.safetensors"));
                wgtrain::train::checkpoint::export(path, &copy).unwrap();
                format!("checkpoint {step}")
            }
        };
        self.lines.lock().unwrap().push(line);
        Ok(())
    }
}

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(None).unwrap_or_else(|e| panic!("training tests need an adapter: {e}"))
    })
}
