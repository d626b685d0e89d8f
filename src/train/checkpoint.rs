//! Checkpoints as safetensors files: every parameter under its GPT-2-style name, the optimizer
//! state under `optim.<slot>.<name>` (e.g. `optim.m.wte`; 8-bit codes as U32), and in the metadata
//! the step, the optimizer's step count and scalar state, the data RNG state and the whole config
//! (JSON), so any safetensors reader can open the weights and wgtrain can resume exactly.
//!
//! Writes are atomic: the file is written beside the target under a temporary name, fsynced, then
//! renamed over the target, so a crash or Ctrl-C mid-write leaves the last good checkpoint intact.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::Param;
use crate::optim::ParamState;
use crate::tensor::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: &str = "wgtrain-checkpoint-1";

/// What a checkpoint holds besides the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub step: u64,
    pub optimizer_t: u64,
    /// NAG-GS's γ (unused by other optimizers).
    pub optimizer_gamma: f32,
    pub rng: [u64; 4],
    /// The training config, as JSON.
    pub config: String,
    /// The run this checkpoint belongs to (kept across resumes; empty in checkpoints written
    /// before runs had ids): an output directory holding another run's checkpoint is not
    /// overwritten without `--overwrite`.
    pub run: String,
    /// The step stats kept across steps: the optimizer steps taken (Adam's t, which skipped
    /// steps do not advance) and the loss scaler's state. None in checkpoints written before
    /// they were kept (their steps taken are `optimizer_t`).
    pub step_state: Option<crate::optim::guard::StepState>,
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
        error: source,
    }
}

/// Reads every tensor back and writes the checkpoint atomically to `path`.
pub fn save(
    gpu: &Gpu,
    path: &Path,
    params: &[&Param],
    state: &[ParamState],
    meta: &CheckpointMeta,
) -> Result<()> {
    let mut named: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    // I4 tensors: safetensors has no 4-bit integer type, so they are stored as their packed
    // bytes (U8) and their shape goes in the metadata.
    let mut packed: HashMap<String, Vec<usize>> = HashMap::new();
    let mut add = |name: String, t: &Tensor| -> Result<()> {
        let (dtype, shape) = file_dtype(t.dtype(), t.shape());
        if t.dtype() == DType::I4 {
            packed.insert(name.clone(), t.shape().to_vec());
        }
        named.push((name, dtype, shape, gpu.read_bytes(t)?));
        Ok(())
    };
    for p in params {
        add(p.name.clone(), p.value())?;
    }
    // optimizer state by parameter name (frozen parameters have none)
    for (name, slots) in state {
        for (slot, t) in slots {
            add(format!("optim.{slot}.{name}"), t)?;
        }
    }
    let views = named
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert("step".to_string(), meta.step.to_string());
    info.insert("optimizer_t".to_string(), meta.optimizer_t.to_string());
    // Rust's f32 Display is the shortest string that parses back to the same bits.
    info.insert(
        "optimizer_gamma".to_string(),
        meta.optimizer_gamma.to_string(),
    );
    info.insert("rng".to_string(), serde_json::to_string(&meta.rng).unwrap());
    info.insert("config".to_string(), meta.config.clone());
    info.insert("run".to_string(), meta.run.clone());
    if let Some(s) = &meta.step_state {
        info.insert("steps_taken".to_string(), s.steps_taken.to_string());
        info.insert("loss_scale".to_string(), s.loss_scale.to_string());
        info.insert(
            "loss_scale_growth_tracker".to_string(),
            s.growth_tracker.to_string(),
        );
        info.insert("loss_scale_overflows".to_string(), s.overflows.to_string());
    }
    if !packed.is_empty() {
        info.insert("i4".to_string(), serde_json::to_string(&packed).unwrap());
    }
    let bytes = safetensors::tensor::serialize(views, Some(info)).map_err(|e| err(path, e))?;
    write_atomically(path, &bytes)
}

/// The step and run of the checkpoint at `path`, from its header alone (no tensor is read);
/// None when it is not a readable wgtrain checkpoint.
pub fn peek(path: &Path) -> Option<(u64, String)> {
    let (header, _) = crate::files::open_safetensors(path, "wgtrain checkpoint").ok()?;
    let info = header.metadata().as_ref()?;
    if info.get("format").map(String::as_str) != Some(FORMAT) {
        return None;
    }
    let step = info.get("step")?.parse().ok()?;
    Some((step, info.get("run").cloned().unwrap_or_default()))
}

/// How a tensor of `dtype` and `shape` is stored in safetensors: its own type, except I4 (bytes).
fn file_dtype(dtype: DType, shape: &[usize]) -> (Dtype, Vec<usize>) {
    match dtype {
        DType::F32 => (Dtype::F32, shape.to_vec()),
        DType::U32 => (Dtype::U32, shape.to_vec()),
        DType::F16 => (Dtype::F16, shape.to_vec()),
        DType::BF16 => (Dtype::BF16, shape.to_vec()),
        DType::I8 => (Dtype::I8, shape.to_vec()),
        DType::I4 => (
            Dtype::U8,
            vec![DType::I4.bytes_for(shape.iter().product()) as usize],
        ),
    }
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

/// A checkpoint read from disk: its tensors by name (dtype, shape, little-endian bytes) and its
/// metadata.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    pub tensors: HashMap<String, (DType, Vec<usize>, Vec<u8>)>,
}

impl Checkpoint {
    /// Reads a checkpoint: its header is validated (a safetensors header, wgtrain's metadata,
    /// a valid RNG state) before its data is read, and the data must fill the file exactly.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let (header, mut data) = crate::files::open_safetensors(path, "wgtrain checkpoint")?;
        let info = header.metadata().clone().unwrap_or_default();
        if info.get("format").map(String::as_str) == Some(crate::quant::file::FORMAT) {
            return Err(err(
                path,
                format!(
                    "is a quantized model ({} weights, written by wgtrain quantize): it is for \
                     inference; training resumes from the checkpoint it was quantized from",
                    info.get("method").map_or("?", String::as_str)
                ),
            ));
        }
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
            optimizer_gamma: field("optimizer_gamma")?
                .parse()
                .map_err(|e| err(path, format!("optimizer_gamma: {e}")))?,
            rng: serde_json::from_str(field("rng")?).map_err(|e| err(path, format!("rng: {e}")))?,
            config: field("config")?.clone(),
            run: info.get("run").cloned().unwrap_or_default(),
            step_state: match info.get("steps_taken") {
                None => None,
                Some(_) => {
                    let loss_scale: f32 = field("loss_scale")?
                        .parse()
                        .map_err(|e| err(path, format!("loss_scale: {e}")))?;
                    if !(loss_scale > 0.0 && loss_scale.is_finite()) {
                        return Err(err(
                            path,
                            format!("loss_scale {loss_scale} is not positive"),
                        ));
                    }
                    Some(crate::optim::guard::StepState {
                        steps_taken: num("steps_taken")?,
                        loss_scale,
                        growth_tracker: num("loss_scale_growth_tracker")? as u32,
                        overflows: num("loss_scale_overflows")? as u32,
                    })
                }
            },
        };
        if meta.rng == [0; 4] {
            // xoshiro's one fixed point: it would draw zeros forever
            return Err(err(
                path,
                "its data RNG state is all zeros, which is not a valid state",
            ));
        }
        if !meta.optimizer_gamma.is_finite() {
            return Err(err(path, "optimizer_gamma is not finite"));
        }
        let packed: HashMap<String, Vec<usize>> = match info.get("i4") {
            Some(s) => serde_json::from_str(s).map_err(|e| err(path, format!("i4: {e}")))?,
            None => HashMap::new(),
        };
        let mut tensors = HashMap::new();
        let mut in_order: Vec<_> = header.tensors().into_iter().collect();
        in_order.sort_by_key(|(_, view)| view.data_offsets);
        for (name, view) in in_order {
            let (dtype, shape) = match (view.dtype, packed.get(&name)) {
                (Dtype::U8, Some(shape)) => (DType::I4, shape.clone()),
                (Dtype::F32, None) => (DType::F32, view.shape.clone()),
                (Dtype::U32, None) => (DType::U32, view.shape.clone()),
                (Dtype::F16, None) => (DType::F16, view.shape.clone()),
                (Dtype::BF16, None) => (DType::BF16, view.shape.clone()),
                (Dtype::I8, None) => (DType::I8, view.shape.clone()),
                (other, _) => {
                    return Err(err(
                        path,
                        format!(
                            "tensor {name} is {other:?}; wgtrain reads F32, U32, F16, BF16, I8 \
                             and I4 (stored as U8 bytes)"
                        ),
                    ));
                }
            };
            let (start, end) = view.data_offsets;
            let numel = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            if numel.map(|n| DType::bytes_for(dtype, n as usize)) != Some((end - start) as u64) {
                return Err(err(
                    path,
                    format!("tensor {name}: size does not match its shape"),
                ));
            }
            tensors.insert(name, (dtype, shape, data.read((start, end))?));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            meta,
            tensors,
        })
    }

    /// The training config stored in the checkpoint.
    pub fn config(&self) -> Result<crate::train::TrainConfig> {
        crate::train::TrainConfig::from_json(
            &self.meta.config,
            &format!("{} (the config stored in it)", self.path.display()),
        )
    }

    /// The bytes of `name`, checked against the tensor that will receive them.
    pub fn get(&self, name: &str, into: &Tensor) -> Result<&[u8]> {
        self.get_as(name, into.dtype(), into.shape())
    }

    /// The bytes of `name`, checked against the dtype and shape expected of it.
    pub fn get_as(&self, name: &str, want: DType, want_shape: &[usize]) -> Result<&[u8]> {
        let (dtype, shape, bytes) = self.tensors.get(name).ok_or_else(|| {
            err(
                &self.path,
                format!("has no tensor {name:?}: it was saved from another model or optimizer"),
            )
        })?;
        if shape != want_shape || *dtype != want {
            return Err(err(
                &self.path,
                format!(
                    "tensor {name:?} is {dtype:?} {shape:?}, the model expects {want:?} {want_shape:?}: it was saved from another model shape",
                ),
            ));
        }
        Ok(bytes)
    }

    /// The f32 values of a parameter.
    pub fn values(&self, name: &str, into: &Tensor) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(self.get(name, into)?))
    }

    /// Uploads the checkpoint's values into `params` by name (and the optimizer state when
    /// given, by parameter and slot name). Every tensor is checked before anything is written.
    /// With `partial`, parameters the checkpoint lacks keep their values (reported as fresh);
    /// without it, a missing one is an error. Optimizer state nothing asked for (another
    /// method's) is reported as unused; a weight nothing asked for is an error.
    pub fn restore(
        &self,
        gpu: &Gpu,
        params: &[&Param],
        state: Option<&[ParamState]>,
        partial: bool,
    ) -> Result<RestoreReport> {
        let mut pairs: Vec<(String, &Tensor)> = vec![];
        let mut report = RestoreReport::default();
        // values that live on another rank (ZeRO 3): checked here, restored by their owner
        let mut elsewhere: Vec<String> = vec![];
        for p in params {
            if partial && !self.tensors.contains_key(&p.name) {
                report.fresh.push(p.name.clone());
            } else if !p.resident() {
                self.get_as(&p.name, DType::F32, p.shape())?;
                elsewhere.push(p.name.clone());
            } else {
                pairs.push((p.name.clone(), p.value()));
            }
        }
        for (name, slots) in state.unwrap_or_default() {
            for (slot, t) in slots {
                pairs.push((format!("optim.{slot}.{name}"), t));
            }
        }
        for (name, t) in &pairs {
            let bytes = self.get(name, t)?;
            if t.dtype() == DType::F32 {
                let bad = bytes
                    .chunks_exact(4)
                    .filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
                    .count();
                if bad > 0 {
                    return Err(err(
                        &self.path,
                        format!("tensor {name:?} holds {bad} NaN or infinite values"),
                    ));
                }
            }
        }
        let asked: std::collections::HashSet<&str> = pairs
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(elsewhere.iter().map(|n| n.as_str()))
            .collect();
        let mut unused: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !asked.contains(k.as_str()))
            .cloned()
            .collect();
        unused.sort();
        // Another optimizer's state may go unused; a weight the model lacks may not: the file
        // was saved from another model (e.g. a config edited from 2 layers to 1).
        let strays: Vec<&String> = unused.iter().filter(|n| !n.starts_with("optim.")).collect();
        if let Some(first) = strays.first() {
            return Err(err(
                &self.path,
                format!(
                    "holds {} weight(s) this model does not have ({first:?}{}): it was saved from \
                     another model shape than the config builds",
                    strays.len(),
                    if strays.len() > 1 { ", …" } else { "" }
                ),
            ));
        }
        for (name, t) in &pairs {
            gpu.upload(t, self.get(name, t)?);
        }
        for p in params {
            p.refresh_work(gpu);
        }
        report.restored = pairs.into_iter().map(|(n, _)| n).chain(elsewhere).collect();
        report.unused = unused;
        Ok(report)
    }
}

/// What [`Checkpoint::restore`] did, tensor by tensor name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestoreReport {
    /// Loaded from the checkpoint.
    pub restored: Vec<String>,
    /// Parameters the checkpoint lacks, left as initialised (partial restores only).
    pub fresh: Vec<String>,
    /// Checkpoint tensors that went nowhere (e.g. the state of another optimizer method).
    pub unused: Vec<String>,
}

impl RestoreReport {
    /// Lines for the log: what stayed fresh and what was dropped (empty when nothing was).
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![];
        if !self.fresh.is_empty() {
            lines.push(format!(
                "{} parameters not in the checkpoint, freshly initialised: {}",
                self.fresh.len(),
                self.fresh.join(", ")
            ));
        }
        if !self.unused.is_empty() {
            lines.push(format!(
                "{} checkpoint tensors not used (dropped): {}",
                self.unused.len(),
                self.unused.join(", ")
            ));
        }
        lines
    }
}
