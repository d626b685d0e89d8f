//! A quantized model on disk: safetensors with every tensor of the checkpoint it came from
//! (optimizer state dropped) except each quantized weight W, stored
//! - in a grouped format as `W.qcodes` (U8, one row of codes per output channel) and
//!   `W.qscale` (one scale per group: F16 for int4, F32 otherwise);
//! - by the Kashin method as `W.qcodes` (U8, the b-bit codes as one little-endian bitstream),
//!   `W.qcodebook` (F32, (2^b, 2)) and `W.qnorm` (F32, (1));
//!
//! and in the metadata the format, the method and its parameters (group; or bits and basis),
//! the quantized weights' shapes, the weights left f32 (`unquantized`: a Kashin decomposition
//! that did not converge) and the source checkpoint's config and step.

use super::kashin::{self, Basis, Kashin};
use super::{quantize, relative_error, Encoded, Method, Quantized, Scheme};
use crate::error::{Error, Result};
use crate::tensor::DType;
use crate::train::checkpoint::Checkpoint;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const FORMAT: &str = "wgtrain-quantized-1";

/// What quantizing one weight did.
#[derive(Clone, Debug)]
pub struct LayerReport {
    pub name: String,
    pub shape: [usize; 2],
    /// ‖W − dequantize(Q)‖_F / ‖W‖_F
    pub error: f64,
    pub bytes_before: usize,
    pub bytes_after: usize,
    /// Kashin: the decomposition's iterations and final residual, or why the weight stayed f32.
    pub note: String,
}

/// The weights a post-training quantization targets: the linear layers' matrices (2-D,
/// named `*.weight`), not the embeddings (`wte`, `wpe`) nor 1-D tensors nor optimizer state.
pub fn targets(ckpt: &Checkpoint) -> Vec<String> {
    ckpt.names()
        .filter(|n| {
            ckpt.info(n)
                .is_some_and(|(dtype, shape)| dtype == DType::F32 && shape.len() == 2)
                && n.ends_with(".weight")
                && !n.starts_with("optim.")
                && !n.contains(".lora_")
        })
        .map(String::from)
        .collect()
}

fn err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Quantizes `ckpt`'s target weights by `scheme` and writes the quantized model to `out`
/// (atomically). Returns a report per target weight, in name order. The Kashin method runs on
/// `gpu`; the grouped formats on the host.
pub fn write(
    ckpt: &Checkpoint,
    scheme: &Scheme,
    out: &Path,
    gpu: &crate::Gpu,
) -> Result<Vec<LayerReport>> {
    let quantized: Vec<String> = targets(ckpt);
    if quantized.is_empty() {
        return Err(err(&ckpt.path, "holds no linear weights to quantize"));
    }
    let mut named: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    let mut shapes: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    let mut reports = vec![];
    let mut unquantized: Vec<String> = vec![];
    for name in ckpt.names().map(String::from).collect::<Vec<_>>() {
        let name = &name;
        if name.starts_with("optim.") {
            continue;
        }
        let (dtype, shape) = ckpt.info(name).expect("a listed tensor");
        let (dtype, shape) = (&dtype, &shape.to_vec());
        let bytes = &ckpt.read(name)?;
        if !quantized.contains(name) {
            let (file_dtype, file_shape) = match dtype {
                DType::F32 => (Dtype::F32, shape.clone()),
                DType::U32 => (Dtype::U32, shape.clone()),
                other => {
                    return Err(err(
                        &ckpt.path,
                        format!("{name} is {other:?}: only f32 checkpoints quantize"),
                    ))
                }
            };
            named.push((name.clone(), file_dtype, file_shape, bytes.clone()));
            continue;
        }
        let (rows, cols) = (shape[0], shape[1]);
        let w: Vec<f32> = bytemuck::pod_collect_to_vec(bytes);
        let context = |e: Error| err(&ckpt.path, format!("{name}: {e}"));
        let (encoded, note) = match scheme {
            Scheme::Grouped(m) => (
                Encoded::Grouped(quantize(*m, &w, rows, cols).map_err(context)?),
                String::new(),
            ),
            Scheme::Kashin(o) => {
                let r = kashin::quantize(gpu, &w, rows, cols, o).map_err(context)?;
                let how = format!("{} iterations, residual {:.1e}", r.iterations, r.residual);
                match r.quantized {
                    Some(k) => (Encoded::Kashin(k), how),
                    None => {
                        // not converged: left f32, as the authors leave such a layer
                        reports.push(LayerReport {
                            name: name.clone(),
                            shape: [rows, cols],
                            error: 0.0,
                            bytes_before: bytes.len(),
                            bytes_after: bytes.len(),
                            note: format!("did not reach --tol {:e} ({how}): left f32", o.tol),
                        });
                        unquantized.push(name.clone());
                        named.push((name.clone(), Dtype::F32, shape.clone(), bytes.clone()));
                        continue;
                    }
                }
            }
        };
        // the matrix a model loading the codes runs with
        let decoded = match &encoded {
            Encoded::Grouped(q) => q.dequantize(),
            Encoded::Kashin(k) => k.decode(gpu)?,
        };
        reports.push(LayerReport {
            name: name.clone(),
            shape: [rows, cols],
            error: relative_error(&decoded, &w),
            bytes_before: bytes.len(),
            bytes_after: encoded.bytes(),
            note,
        });
        named.extend(stored_tensors(name, encoded));
        shapes.insert(name.clone(), [rows, cols]);
    }
    let views = named
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(out, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut info = HashMap::new();
    crate::files::stamp_kind(&mut info, FORMAT);
    info.insert("method".to_string(), scheme.name().to_string());
    match scheme {
        Scheme::Grouped(m) => {
            info.insert("group".to_string(), m.group(0).to_string());
        }
        Scheme::Kashin(o) => {
            info.insert("bits".to_string(), o.bits.to_string());
            info.insert("basis".to_string(), o.basis.describe());
        }
    }
    info.insert(
        "unquantized".to_string(),
        serde_json::to_string(&unquantized).unwrap(),
    );
    info.insert(
        "quantized".to_string(),
        serde_json::to_string(&shapes).unwrap(),
    );
    info.insert("config".to_string(), ckpt.meta.config.clone());
    info.insert("step".to_string(), ckpt.meta.step.to_string());
    let bytes = safetensors::tensor::serialize(views, Some(info)).map_err(|e| err(out, e))?;
    crate::files::write_atomically(out, &bytes)?;
    Ok(reports)
}

/// The tensors that store one quantized weight `name`: (name, dtype, shape, bytes).
fn stored_tensors(name: &str, e: Encoded) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    match e {
        Encoded::Grouped(q) => {
            let (scale_dtype, scale_bytes): (Dtype, Vec<u8>) = match q.method {
                Method::Int { .. } => (
                    Dtype::F16,
                    q.scales
                        .iter()
                        .flat_map(|&s| half::f16::from_f32(s).to_le_bytes())
                        .collect(),
                ),
                _ => (
                    Dtype::F32,
                    q.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                ),
            };
            let (rows, row_bytes, groups) = (q.rows, q.row_bytes(), q.groups_per_row());
            vec![
                (
                    format!("{name}.qcodes"),
                    Dtype::U8,
                    vec![rows, row_bytes],
                    q.codes,
                ),
                (
                    format!("{name}.qscale"),
                    scale_dtype,
                    vec![rows, groups],
                    scale_bytes,
                ),
            ]
        }
        Encoded::Kashin(k) => vec![
            (
                format!("{name}.qcodes"),
                Dtype::U8,
                vec![k.codes.len()],
                k.codes.clone(),
            ),
            (
                format!("{name}.qcodebook"),
                Dtype::F32,
                vec![k.codebook.len(), 2],
                k.codebook
                    .iter()
                    .flatten()
                    .flat_map(|c| c.to_le_bytes())
                    .collect(),
            ),
            (
                format!("{name}.qnorm"),
                Dtype::F32,
                vec![1],
                k.norm.to_le_bytes().to_vec(),
            ),
        ],
    }
}

/// A quantized model read back: the scheme, the quantized weights, and every other tensor as
/// f32 by name.
pub struct QuantizedModel {
    pub path: std::path::PathBuf,
    /// The method and its parameters, as `quantize` printed them.
    pub scheme: String,
    pub config: String,
    pub step: u64,
    pub quantized: BTreeMap<String, Encoded>,
    pub plain: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Reads a file [`write`] wrote (the header validated before the data is read).
pub fn read(path: &Path) -> Result<QuantizedModel> {
    let (header, mut data) = crate::files::open_safetensors(path, "quantized model")?;
    let info = header.metadata().clone().unwrap_or_default();
    if crate::files::file_kind(&info) != Some(FORMAT) {
        return Err(err(
            path,
            format!("not a quantized model (no format {FORMAT:?} in its metadata)"),
        ));
    }
    let field = |k: &str| {
        info.get(k)
            .ok_or_else(|| err(path, format!("metadata lacks {k:?}")))
    };
    let number = |k: &str| -> Result<usize> {
        field(k)?
            .parse()
            .map_err(|e| err(path, format!("{k}: {e}")))
    };
    // the grouped method, or None for kashin (with its bits and basis)
    let (method, kashin) = match field("method")?.as_str() {
        "kashin" => {
            let basis = Basis::from_description(field("basis")?)
                .ok_or_else(|| err(path, format!("basis {:?}", info["basis"])))?;
            (None, Some((number("bits")? as u32, basis)))
        }
        name => {
            let group = (name != "int8").then(|| number("group")).transpose()?;
            (
                Some(Method::parse(name, group).map_err(|e| err(path, e))?),
                None,
            )
        }
    };
    let shapes: BTreeMap<String, [usize; 2]> = serde_json::from_str(field("quantized")?)
        .map_err(|e| err(path, format!("quantized: {e}")))?;
    let step = field("step")?
        .parse()
        .map_err(|e| err(path, format!("step: {e}")))?;
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = HashMap::new();
    let mut entries: Vec<_> = header.tensors().into_iter().collect();
    entries.sort_by_key(|(_, t)| t.data_offsets.0);
    for (name, t) in entries {
        let width = match t.dtype {
            Dtype::U8 => 1,
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            other => return Err(err(path, format!("tensor {name} is {other:?}"))),
        };
        let numel: usize = t.shape.iter().product();
        if numel * width != t.data_offsets.1 - t.data_offsets.0 {
            return Err(err(
                path,
                format!("tensor {name}: size does not match its shape"),
            ));
        }
        let bytes = data.read(t.data_offsets)?;
        tensors.insert(name, (t.dtype, t.shape.clone(), bytes));
    }
    let mut quantized = BTreeMap::new();
    for (name, &[rows, cols]) in &shapes {
        let mut take = |suffix: &str| {
            tensors
                .remove(&format!("{name}{suffix}"))
                .ok_or_else(|| err(path, format!("lacks {name}{suffix}")))
        };
        let encoded = match (method, kashin) {
            (Some(method), _) => {
                let (_, cshape, codes) = take(".qcodes")?;
                let (sdtype, sshape, sbytes) = take(".qscale")?;
                let scales: Vec<f32> = match sdtype {
                    Dtype::F16 => sbytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                    _ => bytemuck::pod_collect_to_vec(&sbytes),
                };
                if let Some(s) = scales.iter().find(|s| !s.is_finite()) {
                    return Err(err(path, format!("{name}.qscale holds the scale {s}")));
                }
                let q = Quantized {
                    method,
                    rows,
                    cols,
                    codes,
                    scales,
                };
                if cshape != [rows, q.row_bytes()] || sshape != [rows, q.groups_per_row()] {
                    return Err(err(
                        path,
                        format!(
                            "{name}: codes {cshape:?} or scales {sshape:?} do not fit ({rows}, \
                             {cols})"
                        ),
                    ));
                }
                Encoded::Grouped(q)
            }
            (None, Some((bits, basis))) => {
                let (_, _, codes) = take(".qcodes")?;
                let (cdtype, cshape, cb) = take(".qcodebook")?;
                let (ndtype, _, norm) = take(".qnorm")?;
                let fits = (2..=8).contains(&bits)
                    && codes.len() == (rows * cols * bits as usize).div_ceil(8)
                    && cdtype == Dtype::F32
                    && cshape == [1 << bits, 2]
                    && ndtype == Dtype::F32
                    && norm.len() == 4;
                if !fits {
                    return Err(err(
                        path,
                        format!("{name}: codes, codebook or norm do not fit ({rows}, {cols}) at {bits} bits"),
                    ));
                }
                let cb: Vec<f32> = bytemuck::pod_collect_to_vec(&cb);
                let norm = f32::from_le_bytes([norm[0], norm[1], norm[2], norm[3]]);
                if !norm.is_finite() || cb.iter().any(|c| !c.is_finite()) {
                    return Err(err(
                        path,
                        format!("{name}: its norm {norm} or a codebook entry is not finite"),
                    ));
                }
                Encoded::Kashin(Kashin {
                    rows,
                    cols,
                    bits,
                    basis,
                    norm,
                    codebook: cb.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
                    codes,
                })
            }
            (None, None) => unreachable!("a method is grouped or kashin"),
        };
        quantized.insert(name.clone(), encoded);
    }
    // what is left is kept as it was trained: f32 and finite
    let mut plain = HashMap::new();
    for (n, (dtype, shape, bytes)) in tensors {
        if dtype != Dtype::F32 {
            return Err(err(
                path,
                format!("tensor {n} is {dtype:?}, not a kept F32 tensor"),
            ));
        }
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(err(
                path,
                format!("tensor {n} holds {bad} NaN or infinite values"),
            ));
        }
        plain.insert(n, (shape, values));
    }
    let scheme = match (method, kashin) {
        (Some(m), _) => Scheme::Grouped(m).describe(),
        (None, Some((bits, basis))) => format!("kashin ({bits} bits, {} basis)", basis.describe()),
        (None, None) => unreachable!(),
    };
    Ok(QuantizedModel {
        path: path.to_path_buf(),
        scheme,
        config: field("config")?.clone(),
        step,
        quantized,
        plain,
    })
}

/// Whether `path` holds a quantized model (by its header alone).
pub fn is_quantized(path: &Path) -> bool {
    crate::files::open_safetensors(path, "quantized model").is_ok_and(|(h, _)| {
        h.metadata()
            .as_ref()
            .and_then(crate::files::file_kind)
            .is_some_and(|f| f == FORMAT)
    })
}

impl QuantizedModel {
    /// The model its config describes on `gpu`, every quantized weight uploaded as its codes
    /// and scales (read by the dequantizing matmul; the f32 matrix is never allocated) and
    /// every other tensor as stored: for inference.
    pub fn on_device(
        &self,
        gpu: &crate::Gpu,
    ) -> Result<(crate::train::TrainConfig, Box<dyn crate::nn::Model>)> {
        let mut config =
            crate::train::TrainConfig::from_json(&self.config, "the quantized model's config")?;
        if config.model == crate::train::ModelKind::Mlp {
            config.mlp.inputs = crate::data::digits::FEATURES;
            config.mlp.classes = crate::data::digits::CLASSES;
        }
        config.lora = None;
        config.init = None;
        config.validate()?;
        let held: u64 = self
            .quantized
            .values()
            .map(|e| e.shape().iter().map(|&d| d as u64).product::<u64>())
            .chain(
                self.plain
                    .iter()
                    .filter(|(n, _)| !n.contains(".lora_"))
                    .map(|(_, (s, _))| s.iter().map(|&d| d as u64).product::<u64>()),
            )
            .sum();
        crate::train::check_weight_count(&self.path, &config, held)?;
        // a grouped weight's f32 values are never allocated (built as held elsewhere); a
        // Kashin weight is decoded into its f32 value
        let mut resident: std::collections::HashSet<String> = self.plain.keys().cloned().collect();
        resident.extend(
            self.quantized
                .iter()
                .filter(|(_, e)| matches!(e, Encoded::Kashin(_)))
                .map(|(n, _)| n.clone()),
        );
        let build = crate::nn::Build::new(gpu).shard(&resident, true, true);
        let mut model = crate::train::build_model(&build, &config)?;
        for l in model.linears_mut() {
            if let Some(e) = self.quantized.get(&l.w().name) {
                let [rows, cols] = e.shape();
                if [rows, cols] != [l.out_features, l.in_features] {
                    return Err(Error::Config(format!(
                        "{} is ({rows}, {cols}) in the quantized model, ({}, {}) in its config's \
                         model",
                        l.w().name,
                        l.out_features,
                        l.in_features
                    )));
                }
                match e {
                    Encoded::Grouped(q) => l.weight.quantize(
                        crate::ops::qmatmul::QuantWeight::upload(gpu, &l.w().name, q)?,
                    ),
                    Encoded::Kashin(k) => k.decode_on(gpu, l.w().value())?,
                }
            }
        }
        for p in model.params() {
            if self.quantized.contains_key(&p.name) {
                continue;
            }
            let Some((shape, values)) = self.plain.get(&p.name) else {
                return Err(Error::Config(format!(
                    "the quantized model lacks {} that its config's model has",
                    p.name
                )));
            };
            if shape.as_slice() != p.shape() {
                return Err(Error::Config(format!(
                    "{} is {shape:?} in the quantized model, {:?} in its config's model",
                    p.name,
                    p.shape()
                )));
            }
            p.value().write_f32(gpu, values);
        }
        if let Some(extra) = self
            .quantized
            .keys()
            .chain(self.plain.keys())
            .find(|n| !model.params().iter().any(|p| &p.name == *n))
        {
            return Err(Error::Config(format!(
                "the quantized model holds {extra}, which its config's model lacks"
            )));
        }
        Ok((config, model))
    }
}
