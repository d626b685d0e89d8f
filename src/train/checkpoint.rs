//! Checkpoints as safetensors files: every parameter under its GPT-2-style name, the optimizer
//! state under `optim.<slot>.<name>` (e.g. `optim.m.wte`; 8-bit codes as U32), and in the metadata
//! the step, the optimizer's step count and scalar state, the data RNG state and the whole config
//! (JSON), so any safetensors reader can open the weights and wgtrain can resume exactly.
//!
//! Writes are atomic: the file is written beside the target under a temporary name, fsynced, then
//! renamed over the target, so a crash or Ctrl-C mid-write leaves the last good checkpoint intact.

use crate::error::{Error, Result};
use crate::files::{write_atomically, write_atomically_with};
use crate::gpu::Gpu;
use crate::nn::Param;
use crate::optim::ParamState;
use crate::tensor::{DType, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const FORMAT: &str = "wgtrain-checkpoint-1";
/// A part file of a sharded checkpoint (some of its tensors; the index holds the metadata).
pub const PART_FORMAT: &str = "wgtrain-checkpoint-part-1";

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

/// Reads every tensor back and writes the checkpoint atomically to `path`.
pub fn save(
    gpu: &Gpu,
    path: &Path,
    params: &[&Param],
    state: &[ParamState],
    meta: &CheckpointMeta,
) -> Result<()> {
    let state: Vec<&ParamState> = state.iter().collect();
    write_file(gpu, path, FORMAT, params, &state, meta, None)
}

/// Writes one part of a sharded checkpoint (`params`' values and the optimizer `state` this
/// rank holds) atomically to `path` ([`part_path`]); the index ([`save_index`]) is written
/// once every part is.
pub fn save_part(
    gpu: &Gpu,
    path: &Path,
    params: &[&Param],
    state: &[&ParamState],
    meta: &CheckpointMeta,
) -> Result<()> {
    write_file(gpu, path, PART_FORMAT, params, state, meta, None)
}

/// Writes a sharded checkpoint's index atomically to `path`: the run's metadata and the names
/// of its `parts` (files beside it), no tensors; then removes the parts of earlier
/// checkpoints at `path` ([`remove_stale_parts`]).
pub fn save_index(gpu: &Gpu, path: &Path, meta: &CheckpointMeta, parts: &[PathBuf]) -> Result<()> {
    let names: Vec<String> = parts
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .expect("a part path made by part_path")
                .to_string()
        })
        .collect();
    write_file(gpu, path, FORMAT, &[], &[], meta, Some(&names))?;
    remove_stale_parts(path, &names);
    Ok(())
}

/// Where part `i` of `n` of the checkpoint at `path`, taken at `step`, is written: beside it,
/// named for the step, so a new checkpoint's parts never overwrite the parts the last good
/// index names (`checkpoint.safetensors` → `checkpoint.step40.part1of2.safetensors`).
pub fn part_path(path: &Path, step: u64, i: usize, n: usize) -> PathBuf {
    let stem = part_stem(path);
    path.with_file_name(format!("{stem}.step{step}.part{}of{n}.safetensors", i + 1))
}

fn part_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    name.strip_suffix(".safetensors")
        .unwrap_or(name)
        .to_string()
}

/// Removes the part files of the checkpoint at `path` that its index no longer names (`keep`,
/// file names): an earlier checkpoint's, or those of a writer killed before its index. Called
/// after every checkpoint write at `path` (a one-file checkpoint keeps none).
pub fn remove_stale_parts(path: &Path, keep: &[String]) {
    let stem = format!("{}.step", part_stem(path));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_part = name
            .strip_prefix(&stem)
            .is_some_and(|rest| rest.contains(".part") && rest.ends_with(".safetensors"));
        if is_part && !keep.iter().any(|k| k == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write_file(
    gpu: &Gpu,
    path: &Path,
    format: &str,
    params: &[&Param],
    state: &[&ParamState],
    meta: &CheckpointMeta,
    parts: Option<&[String]>,
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
    for (name, slots) in state.iter().copied() {
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
    crate::files::stamp_kind(&mut info, format);
    if let Some(parts) = parts {
        info.insert("parts".to_string(), serde_json::to_string(parts).unwrap());
    }
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
    if crate::files::file_kind(info) != Some(FORMAT) {
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

/// The run's metadata of a checkpoint (or an index), validated.
fn parse_meta(path: &Path, info: &HashMap<String, String>) -> Result<CheckpointMeta> {
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
    Ok(meta)
}

/// Where one tensor of a checkpoint lies: its dtype and shape, and which file and byte range
/// hold it.
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    file: usize,
    range: (usize, usize),
}

/// A checkpoint opened from disk: its metadata and every tensor's name, dtype, shape and place,
/// validated when it is opened; a tensor's bytes are read when asked for, so a rank reads only
/// what it holds. A sharded checkpoint (written by several ranks or stages) is an index file
/// (the metadata, no tensors) naming its part files, each holding some tensors; opened, it
/// is one set of tensors by name, whatever layout wrote it.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    entries: BTreeMap<String, Entry>,
    files: Vec<Mutex<crate::files::SafetensorsData>>,
    /// The metadata as stored (the index's, for a sharded one).
    stored: HashMap<String, String>,
    /// The part files of a sharded checkpoint (empty for one file).
    pub parts: Vec<PathBuf>,
}

impl Checkpoint {
    /// Opens a checkpoint: its header is validated (a safetensors header, wgtrain's metadata,
    /// a valid RNG state, every tensor's dtype and size) before any data is read, and the data
    /// must fill the file exactly; a sharded one's parts too, each of the same run and step.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let (header, data) = crate::files::open_safetensors(path, "wgtrain checkpoint")?;
        let info = header.metadata().clone().unwrap_or_default();
        let kind = crate::files::file_kind(&info);
        if kind == Some(crate::quant::file::FORMAT) {
            return Err(err(
                path,
                format!(
                    "is a quantized model ({} weights, written by wgtrain quantize): it is for \
                     inference; training resumes from the checkpoint it was quantized from",
                    info.get("method").map_or("?", String::as_str)
                ),
            ));
        }
        if kind == Some(PART_FORMAT) {
            return Err(err(
                path,
                "is one part of a sharded checkpoint: open its index (the file named without \
                 .stepN.partIofN)",
            ));
        }
        if kind != Some(FORMAT) {
            return Err(err(
                path,
                format!("not a wgtrain checkpoint (no format {FORMAT:?} in its metadata)"),
            ));
        }
        let meta = parse_meta(path, &info)?;
        let mut ckpt = Checkpoint {
            path: path.to_path_buf(),
            meta,
            entries: BTreeMap::new(),
            files: vec![],
            stored: info.clone(),
            parts: vec![],
        };
        ckpt.add_file(path, &header, data)?;
        let Some(parts) = info.get("parts") else {
            return Ok(ckpt);
        };
        let names: Vec<String> =
            serde_json::from_str(parts).map_err(|e| err(path, format!("parts: {e}")))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        for name in names {
            // a part lies beside its index: a bare file name, nothing that leads elsewhere
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(err(
                    path,
                    format!("names a part {name:?} outside its directory"),
                ));
            }
            let part = dir.join(&name);
            let (header, data) = crate::files::open_safetensors(&part, "wgtrain checkpoint part")
                .map_err(|e| err(path, format!("its part {name}: {e}")))?;
            let pinfo = header.metadata().clone().unwrap_or_default();
            let step = pinfo.get("step").and_then(|s| s.parse::<u64>().ok());
            // (each part is written before its index, under a name of its step: a part of
            // another step is another checkpoint's)
            if crate::files::file_kind(&pinfo) != Some(PART_FORMAT) || step != Some(ckpt.meta.step)
            {
                return Err(err(
                    path,
                    format!(
                        "its part {name} is not a part of this checkpoint (of step {})",
                        ckpt.meta.step
                    ),
                ));
            }
            ckpt.add_file(&part, &header, data)?;
            ckpt.parts.push(part);
        }
        Ok(ckpt)
    }

    /// Registers the tensors of one file (the checkpoint or one of its parts).
    fn add_file(
        &mut self,
        path: &Path,
        header: &safetensors::tensor::Metadata,
        data: crate::files::SafetensorsData,
    ) -> Result<()> {
        let info = header.metadata().clone().unwrap_or_default();
        let packed: HashMap<String, Vec<usize>> = match info.get("i4") {
            Some(s) => serde_json::from_str(s).map_err(|e| err(path, format!("i4: {e}")))?,
            None => HashMap::new(),
        };
        let file = self.files.len();
        for (name, view) in header.tensors() {
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
            if self.entries.contains_key(&name) {
                return Err(err(
                    &self.path,
                    format!("holds tensor {name:?} twice (in two of its parts)"),
                ));
            }
            let entry = Entry {
                dtype,
                shape,
                file,
                range: (start, end),
            };
            self.entries.insert(name, entry);
        }
        self.files.push(Mutex::new(data));
        Ok(())
    }

    /// Every tensor's name, in name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The dtype and shape of `name`.
    pub fn info(&self, name: &str) -> Option<(DType, &[usize])> {
        self.entries
            .get(name)
            .map(|e| (e.dtype, e.shape.as_slice()))
    }

    /// The bytes of `name` (read from its file now).
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let e = self.entry(name)?;
        let mut file = self.files[e.file].lock().unwrap_or_else(|p| p.into_inner());
        file.read(e.range)
    }

    /// The training config stored in the checkpoint.
    pub fn config(&self) -> Result<crate::train::TrainConfig> {
        crate::train::TrainConfig::from_json(
            &self.meta.config,
            &format!("{} (the config stored in it)", self.path.display()),
        )
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).ok_or_else(|| {
            err(
                &self.path,
                format!("has no tensor {name:?}: it was saved from another model or optimizer"),
            )
        })
    }

    /// Checks that `name` is a tensor of dtype `want` and shape `want_shape` (nothing read).
    pub fn check_as(&self, name: &str, want: DType, want_shape: &[usize]) -> Result<()> {
        let e = self.entry(name)?;
        if e.shape != want_shape || e.dtype != want {
            return Err(err(
                &self.path,
                format!(
                    "tensor {name:?} is {:?} {:?}, the model expects {want:?} {want_shape:?}: it \
                     was saved from another model shape",
                    e.dtype, e.shape
                ),
            ));
        }
        Ok(())
    }

    /// The bytes of `name`, checked against the tensor that will receive them.
    pub fn get(&self, name: &str, into: &Tensor) -> Result<Vec<u8>> {
        self.get_as(name, into.dtype(), into.shape())
    }

    /// The bytes of `name`, checked against the dtype and shape expected of it.
    pub fn get_as(&self, name: &str, want: DType, want_shape: &[usize]) -> Result<Vec<u8>> {
        self.check_as(name, want, want_shape)?;
        self.read(name)
    }

    /// The f32 values of a parameter.
    pub fn values(&self, name: &str, into: &Tensor) -> Result<Vec<f32>> {
        Ok(bytemuck::pod_collect_to_vec(&self.get(name, into)?))
    }

    /// Uploads the checkpoint's values into `params` by name (and the optimizer state when
    /// given, by parameter and slot name). Every tensor is checked before anything is written;
    /// only the tensors this device receives are read (a rank's share of a sharded run), and
    /// on a ledger twin none (their names, dtypes and shapes are checked). With `partial`,
    /// parameters the checkpoint lacks keep their values (reported as fresh); without it, a
    /// missing one is an error. Optimizer state nothing asked for (another method's) is
    /// reported as unused; a weight nothing asked for is an error.
    pub fn restore(
        &self,
        gpu: &Gpu,
        params: &[&Param],
        state: Option<&[ParamState]>,
        partial: bool,
    ) -> Result<RestoreReport> {
        let mut pairs: Vec<(String, &Tensor)> = vec![];
        let mut report = RestoreReport::default();
        // values that live on another rank (ZeRO 3, a pipeline's other stages): checked here,
        // restored by their owner
        let mut elsewhere: Vec<String> = vec![];
        for p in params {
            if partial && !self.has(&p.name) {
                report.fresh.push(p.name.clone());
            } else if !p.resident() {
                self.check_as(&p.name, DType::F32, p.shape())?;
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
            self.check_as(name, t.dtype(), t.shape())?;
        }
        let asked: std::collections::HashSet<&str> = pairs
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(elsewhere.iter().map(|n| n.as_str()))
            .collect();
        let unused: Vec<String> = self
            .names()
            .filter(|k| !asked.contains(k))
            .map(String::from)
            .collect();
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
        if !gpu.is_ledger() {
            let mut bytes = Vec::with_capacity(pairs.len());
            for (name, t) in &pairs {
                let b = self.read(name)?;
                if t.dtype() == DType::F32 {
                    let bad = crate::files::nonfinite_f32(&b);
                    if bad > 0 {
                        return Err(err(
                            &self.path,
                            format!("tensor {name:?} holds {bad} NaN or infinite values"),
                        ));
                    }
                }
                bytes.push(b);
            }
            for ((_, t), b) in pairs.iter().zip(&bytes) {
                gpu.upload(t, b);
            }
            for p in params {
                p.refresh_work(gpu);
            }
        }
        report.restored = pairs.into_iter().map(|(n, _)| n).chain(elsewhere).collect();
        report.unused = unused;
        Ok(report)
    }
}

/// Consolidates the checkpoint at `from` (one file, or a sharded checkpoint's index and parts)
/// into one safetensors file at `to` with the same tensors and metadata, written atomically and
/// streaming: on the host, one tensor's bytes in memory at a time. `to` may not be `from` or
/// one of its parts. Returns the bytes written.
pub fn export(from: &Path, to: &Path) -> Result<u64> {
    let ckpt = Checkpoint::load(from)?;
    let same = |a: &Path| {
        let (a, b) = (a.canonicalize(), to.canonicalize());
        a.is_ok() && a.ok() == b.ok()
    };
    if same(from) || ckpt.parts.iter().any(|p| same(p)) {
        return Err(err(
            to,
            "is the checkpoint being exported (or one of its parts)",
        ));
    }
    let mut info = ckpt.stored.clone();
    info.remove("parts");
    info.remove("i4");
    let mut header = serde_json::Map::new();
    let mut packed = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, e) in &ckpt.entries {
        let (dtype, shape) = file_dtype(e.dtype, &e.shape);
        if e.dtype == DType::I4 {
            packed.insert(name.clone(), serde_json::json!(e.shape));
        }
        let len = e.range.1 - e.range.0;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": format!("{dtype:?}"),
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    if !packed.is_empty() {
        info.insert("i4".into(), serde_json::Value::Object(packed).to_string());
    }
    header.insert("__metadata__".into(), serde_json::json!(info));
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    // the data starts 8-byte aligned, as safetensors writes it
    json.resize(json.len().next_multiple_of(8), b' ');
    let total = 8 + json.len() as u64 + offset as u64;
    let mut failed = None;
    write_atomically_with(to, &mut |f| {
        f.write_all(&(json.len() as u64).to_le_bytes())?;
        f.write_all(&json)?;
        for name in ckpt.entries.keys() {
            match ckpt.read(name) {
                Ok(bytes) => f.write_all(&bytes)?,
                Err(e) => {
                    failed = Some(e);
                    return Err(std::io::Error::other("a tensor could not be read"));
                }
            }
        }
        Ok(())
    })
    .map_err(|e| failed.take().unwrap_or(e))?;
    Ok(total)
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
