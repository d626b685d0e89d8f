//! Checkpoints as safetensors files: every parameter under its GPT-2-style name, the optimizer
//! moments under `optim.m.<name>` / `optim.v.<name>`, and in the metadata the step, the optimizer
//! step count, the data RNG state and the whole config (JSON), so any safetensors reader can open
//! the weights and wgtrain can resume exactly.
//!
//! Writes are atomic: the file is written beside the target under a temporary name, fsynced, then
//! renamed over the target, so a crash or Ctrl-C mid-write leaves the last good checkpoint intact.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Param;
use crate::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "wgtrain-checkpoint-1";

/// What a checkpoint holds besides the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub step: u64,
    pub optimizer_t: u64,
    pub rng: [u64; 4],
    /// The training config, as JSON.
    pub config: String,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads every tensor back and writes the checkpoint atomically to `path`.
pub fn save(
    gpu: &Gpu,
    path: &Path,
    params: &[&Param],
    moments: &[(Tensor, Tensor)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    for (p, (m, v)) in params.iter().zip(moments) {
        named.push((
            p.name.clone(),
            p.value.shape().to_vec(),
            gpu.read_bytes(&p.value)?,
        ));
        named.push((
            format!("optim.m.{}", p.name),
            m.shape().to_vec(),
            gpu.read_bytes(m)?,
        ));
        named.push((
            format!("optim.v.{}", p.name),
            v.shape().to_vec(),
            gpu.read_bytes(v)?,
        ));
    }
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("step".to_string(), meta.step.to_string());
    info.insert("optimizer_t".to_string(), meta.optimizer_t.to_string());
    info.insert("rng".to_string(), serde_json::to_string(&meta.rng).unwrap());
    info.insert("config".to_string(), meta.config.clone());
    let bytes = safetensors::tensor::serialize(views, Some(info)).map_err(|e| err(path, e))?;
    write_atomically(path, &bytes)
}

/// temp file in the same directory → write → fsync → rename over `path` → fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A checkpoint read from disk: its tensors by name (f32 values) and its metadata.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| err(path, format!("not a safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| err(path, e))?;
        let info = header.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(err(
                path,
                format!("not a wgtrain checkpoint (no format {FORMAT:?} in its metadata)"),
            ));
        }
        let field = |k: &str| {
            info.get(k)
                .ok_or_else(|| err(path, format!("metadata lacks {k:?}")))
        };
        let num = |k: &str| -> Result<u64> {
            field(k)?
                .parse()
                .map_err(|e| err(path, format!("{k}: {e}")))
        };
        let meta = CheckpointMeta {
            step: num("step")?,
            optimizer_t: num("optimizer_t")?,
            rng: serde_json::from_str(field("rng")?).map_err(|e| err(path, format!("rng: {e}")))?,
            config: field("config")?.clone(),
        };
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(err(
                    path,
                    format!("tensor {name} is {:?}, expected F32", view.dtype()),
                ));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            meta,
            tensors,
        })
    }

    /// The values of `name`, checked against the shape the model expects.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<&[f32]> {
        let (got, values) = self.tensors.get(name).ok_or_else(|| {
            err(
                &self.path,
                format!("has no tensor {name:?}: it was saved from another model"),
            )
        })?;
        if got != shape {
            return Err(err(
                &self.path,
                format!("tensor {name:?} has shape {got:?}, the model expects {shape:?}: it was saved from another model shape"),
            ));
        }
        Ok(values)
    }

    /// Uploads the checkpoint's values into `params` (and the optimizer moments when given).
    pub fn restore(
        &self,
        gpu: &Gpu,
        params: &[&Param],
        moments: Option<&[(Tensor, Tensor)]>,
    ) -> Result<()> {
        // Check everything before writing anything.
        for p in params {
            self.get(&p.name, p.value.shape())?;
            if moments.is_some() {
                self.get(&format!("optim.m.{}", p.name), p.value.shape())?;
                self.get(&format!("optim.v.{}", p.name), p.value.shape())?;
            }
        }
        for (i, p) in params.iter().enumerate() {
            p.value.write_f32(gpu, self.get(&p.name, p.value.shape())?);
            if let Some(moments) = moments {
                let (m, v) = &moments[i];
                m.write_f32(gpu, self.get(&format!("optim.m.{}", p.name), m.shape())?);
                v.write_f32(gpu, self.get(&format!("optim.v.{}", p.name), v.shape())?);
            }
        }
        Ok(())
    }
}
