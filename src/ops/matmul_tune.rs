//! Which matmul kernel, and which tile shape, each layout uses on a device: a short autotune on
//! first use, remembered by that [`Gpu`] (its per-device state) and cached on disk per adapter,
//! driver, enabled features, wgtrain version and kernel source
//! (`<OS cache dir>/wgtrain/matmul-tune.json`, or `$WGTRAIN_CACHE_DIR`).
//!
//! Where the adapter has subgroups of at least 8 lanes the candidates are the register-blocked
//! vec4 kernel (`matmul.wgsl`) and the subgroup kernel (`matmul_subgroup.wgsl`) at the tile
//! shapes of [`TUNE_TILES`] ([`CPU_TUNE`] only, on CPU adapters); elsewhere the blocked
//! kernel is the only one. Every kernel computes each output with the same
//! operations in the same order, so the choice changes speed, never results; a candidate whose
//! output is wrong on this device (one that breaks the subgroup kernel's assumptions) is
//! rejected. `WGTRAIN_MATMUL=blocked|subgroup:RxC|texture:RxC|tiled:RxC` skips the autotune and
//! forces one kernel.
//! Dims that are not multiples of 4 run the chosen kernel on zero-padded copies (`ops::pad`).

use super::matmul::{Layout, MatmulDims};
use crate::gpu::{Category, Gpu, Shader};
use crate::rng::Rng;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

/// A matmul kernel for operands whose M, N and K are multiples of 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// `matmul_v4`: 8×8 outputs per invocation, workgroup 8×8.
    Blocked,
    /// `matmul_subgroup`: 8·`row_groups` rows × 4·`col_groups` columns per lane.
    Subgroup { row_groups: u32, col_groups: u32 },
    /// `matmul_subgroup` at the same tiles with A and B read from textures (each operand first
    /// copied into an rgba32float operand texture, `gpu::texture`); for llvmpipe, where a texel fetch
    /// is one call for all SIMD lanes and a storage read a loop over them.
    Texture { row_groups: u32, col_groups: u32 },
    /// `matmul_tiled`: workgroup-memory tiles of `rows` × `cols` outputs per 256-invocation
    /// workgroup (one of [`TILED_TILES`]); for GPUs.
    Tiled { rows: u32, cols: u32 },
}

/// ((outputs per workgroup: rows, columns), (TM, TN, BK))
pub type TiledShape = ((u32, u32), (u32, u32, u32));

/// The tiled kernel's shapes: (outputs per workgroup: rows, columns) with (TM, TN, BK), the rows
/// and columns per invocation and the k of each shared slice. Workgroup memory per shape is
/// (BK·BM + BK·BN)·4 bytes: 8, 12, 12 and 8 KiB, inside WebGPU's 16 KiB minimum.
pub const TILED_TILES: [TiledShape; 4] = [
    ((64, 64), (4, 4, 16)),
    ((128, 64), (8, 4, 16)),
    ((64, 128), (4, 8, 16)),
    ((128, 128), (8, 8, 8)),
];

/// The subgroup kernel's tile shapes the autotune tries (row groups of 8 rows, vec4 columns per
/// lane): every shape `matmul_subgroup.wgsl` spells out.
pub const SUBGROUP_TILES: [(u32, u32); 8] = [
    (1, 1),
    (2, 1),
    (3, 1),
    (4, 1),
    (1, 2),
    (2, 2),
    (3, 2),
    (4, 2),
];

impl fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatmulKernel::Blocked => write!(f, "blocked"),
            MatmulKernel::Subgroup {
                row_groups,
                col_groups,
            } => write!(f, "subgroup:{row_groups}x{col_groups}"),
            MatmulKernel::Texture {
                row_groups,
                col_groups,
            } => write!(f, "texture:{row_groups}x{col_groups}"),
            MatmulKernel::Tiled { rows, cols } => write!(f, "tiled:{rows}x{cols}"),
        }
    }
}

impl std::str::FromStr for MatmulKernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "blocked" {
            return Ok(MatmulKernel::Blocked);
        }
        let bad = || {
            let tiled = TILED_TILES.map(|(t, _)| t);
            format!("unknown matmul kernel `{s}` (expected blocked, subgroup:RxC or texture:RxC with (R, C) one of {SUBGROUP_TILES:?}, or tiled:RxC with (R, C) one of {tiled:?})")
        };
        if let Some(t) = s.strip_prefix("tiled:") {
            let (r, c) = t.split_once('x').ok_or_else(bad)?;
            let tile = (r.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
            if !TILED_TILES.iter().any(|(t, _)| *t == tile) {
                return Err(bad());
            }
            return Ok(MatmulKernel::Tiled {
                rows: tile.0,
                cols: tile.1,
            });
        }
        let (textures, rest) = match (s.strip_prefix("subgroup:"), s.strip_prefix("texture:")) {
            (Some(t), _) => (false, t),
            (_, Some(t)) => (true, t),
            _ => return Err(bad()),
        };
        let (r, c) = rest.split_once('x').ok_or_else(bad)?;
        let tile = (r.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
        if !SUBGROUP_TILES.contains(&tile) {
            return Err(bad());
        }
        let (row_groups, col_groups) = tile;
        Ok(if textures {
            MatmulKernel::Texture {
                row_groups,
                col_groups,
            }
        } else {
            MatmulKernel::Subgroup {
                row_groups,
                col_groups,
            }
        })
    }
}

/// The kernel for every layout, and where the choice came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    pub kernel: MatmulKernel,
    /// "measured" (autotuned in this process: checked against f64, and timed because more than
    /// one candidate passed), "checked" (the one candidate this adapter kind tries, checked
    /// against f64, nothing timed), "cached" (read from the disk cache), "forced"
    /// (`WGTRAIN_MATMUL`), "only candidate" (no subgroups of 8 lanes) or "ledger" (a planning
    /// twin that runs nothing).
    pub source: &'static str,
    /// Autotune wall time in ms (0 unless measured).
    pub tune_ms: f64,
}

impl Tuning {
    fn new(kernel: MatmulKernel, source: &'static str) -> Tuning {
        Tuning {
            kernel,
            source,
            tune_ms: 0.0,
        }
    }
}

pub fn layout_index(layout: Layout) -> usize {
    match layout {
        Layout::NN => 0,
        Layout::NT => 1,
        Layout::TN => 2,
    }
}

/// The adapter, driver, the device's enabled features, wgtrain version and the kernels' source: a
/// cached choice is reused only when all match (a device opened without SUBGROUP must not be
/// handed the subgroup kernel; a kernel edited during development must be measured again).
pub fn adapter_key(gpu: &Gpu) -> String {
    let i = gpu.info();
    // FNV-1a over the kernel files.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [
        Shader::Matmul,
        Shader::MatmulSubgroup,
        Shader::MatmulTiled,
        Shader::Textured(&crate::gpu::shaders::MATMUL_SUBGROUP_TEXTURES),
    ]
    .iter()
    .flat_map(|s| s.source().bytes())
    {
        h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{} | {:?} | {} {} | features {:?} | wgtrain {} | kernels {h:016x}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        gpu.features() & crate::gpu::OPTIONAL_FEATURES,
        env!("CARGO_PKG_VERSION")
    )
}

/// Whether the adapter can run the subgroup kernel at all.
pub fn subgroups_usable(gpu: &Gpu) -> bool {
    gpu.features().contains(wgpu::Features::SUBGROUP) && gpu.info().subgroup_min_size >= 8
}

/// The tuning of this device: from its own state, the environment, the disk cache, or a fresh
/// autotune (which submits work recorded so far, then times each candidate). Each [`Gpu`] keeps
/// its own, and no lock is held while it is decided. A ledger twin ([`Gpu::ledger`]) copies its
/// device's tuning; one made before any tuning takes the kernel the device would use without
/// timing anything (its dispatches never run).
pub fn tuning(gpu: &Gpu) -> Tuning {
    if let Some(t) = gpu.state::<Tuning>() {
        return t;
    }
    let t = if gpu.is_ledger() {
        // what a CPU adapter checks, else the blocked kernel: a ledger's dispatches never run,
        // and every kernel allocates the same buffers
        let kernel = if subgroups_usable(gpu) {
            CPU_TUNE[0]
        } else {
            MatmulKernel::Blocked
        };
        Tuning::new(kernel, "ledger")
    } else {
        decide(gpu, &adapter_key(gpu))
    };
    gpu.set_state(t.clone());
    t
}

fn decide(gpu: &Gpu, key: &str) -> Tuning {
    let usable = subgroups_usable(gpu);
    if let Ok(forced) = std::env::var("WGTRAIN_MATMUL") {
        match forced.parse::<MatmulKernel>() {
            Ok(MatmulKernel::Subgroup { .. } | MatmulKernel::Texture { .. }) if !usable => {
                log::warn!(
                    "WGTRAIN_MATMUL={forced}: this adapter has no subgroups of 8 lanes; autotuning"
                )
            }
            Ok(k) => return Tuning::new(k, "forced"),
            Err(e) => log::warn!("WGTRAIN_MATMUL: {e}; autotuning"),
        }
    }
    if tune_candidates(gpu) == [MatmulKernel::Blocked] {
        return Tuning::new(MatmulKernel::Blocked, "only candidate");
    }
    if let Some(kernel) = read_cache(key) {
        return Tuning::new(kernel, "cached");
    }
    let t0 = Instant::now();
    let (kernel, timed) = match autotune(gpu) {
        Ok(k) => k,
        Err(e) => {
            log::warn!("matmul autotune failed ({e}); using the blocked kernel");
            return Tuning::new(MatmulKernel::Blocked, "only candidate");
        }
    };
    let tune_ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Err(e) = write_cache(key, kernel) {
        log::warn!("could not write the matmul autotune cache: {e}");
    }
    log::info!("matmul autotune: {kernel} ({tune_ms:.0} ms)");
    Tuning {
        kernel,
        source: if timed { "measured" } else { "checked" },
        tune_ms,
    }
}

/// The shape the candidates are timed on: W-MLP's hidden layer, where the tile shapes differ
/// most (on lavapipe 4x2 is 20-25 % ahead of 4x1 there, level with it on small K).
const TUNE_M: usize = 256;
const TUNE_N: usize = 1024;
const TUNE_K: usize = 1024;

/// The shape each candidate is first checked on against an f64 product: ragged against every
/// tile (72 rows = two and a quarter 32-row tiles), small enough for a quick host reference.
const CHECK_M: usize = 72;
const CHECK_N: usize = 96;
const CHECK_K: usize = 40;

/// The tile shapes the autotune times on a GPU, with the blocked kernel. Compiling a pipeline is
/// not free (on lavapipe, with an empty shader cache, 0.2 s for the 4x1 tile and 0.5-1 s for
/// 4x2), so the autotune times A·B only and gives the winner to all three layouts;
/// `WGTRAIN_MATMUL` can still force any kernel.
pub const TUNE_TILES: [(u32, u32); 4] = [(2, 1), (4, 1), (2, 2), (4, 2)];

/// On CPU adapters with subgroups of 8 lanes (lavapipe) the one kernel that wins there: storage
/// reads are per-lane loops on a CPU, so the tile that reads least per multiply-add wins, and
/// reading A and B through textures (one fetch call for all lanes per texel) wins again. On lavapipe
/// at W-MLP's 256×1024×1024, the 4x2 subgroup tile ran 44-48 GFLOP/s in every layout against
/// 4x1's 37-43 and the blocked kernel's 5.6; the smaller tiles were slower still; its texture
/// form ran 2-2.5x the subgroup tile (`benches/matmul_variants/README.md`). Timing a second
/// candidate cost a first run 0.3-0.45 s (its compile and the timing), so it is only checked
/// against the f64 product.
pub const CPU_TUNE: [MatmulKernel; 1] = [MatmulKernel::Texture {
    row_groups: 4,
    col_groups: 2,
}];

/// What the autotune times on this adapter: on a CPU the one kernel of [`CPU_TUNE`] (the blocked
/// kernel without subgroups); on a GPU the blocked kernel, the subgroup tiles of [`TUNE_TILES`]
/// and the texture kernel where subgroups of 8 lanes are there, and every shape of the
/// workgroup-memory tiled kernel ([`TILED_TILES`]). The tiled kernel is no candidate on a CPU:
/// llvmpipe runs a workgroup's invocations as coroutines and every barrier switches all 256 of
/// them (measured on lavapipe: see `benches/matmul_variants/README.md`).
pub fn tune_candidates(gpu: &Gpu) -> Vec<MatmulKernel> {
    let tile = |(row_groups, col_groups)| MatmulKernel::Subgroup {
        row_groups,
        col_groups,
    };
    let usable = subgroups_usable(gpu);
    if gpu.info().device_type == wgpu::DeviceType::Cpu {
        return if usable {
            CPU_TUNE.to_vec()
        } else {
            vec![MatmulKernel::Blocked]
        };
    }
    let mut c = vec![MatmulKernel::Blocked];
    if usable {
        c.extend(TUNE_TILES.map(tile));
        c.extend(CPU_TUNE);
    }
    c.extend(TILED_TILES.map(|((rows, cols), _)| MatmulKernel::Tiled { rows, cols }));
    c
}

/// Times each of [`tune_candidates`] on A·B and returns the fastest whose result matches an f64
/// reference computed here (a kernel the device runs wrongly is never chosen), and whether the
/// candidates were timed (not when only one passed). Work recorded before the call is submitted
/// first; the autotune's buffers are given back to the device before it returns, so that a
/// training step's peak and the pool's held bytes never include them.
fn autotune(gpu: &Gpu) -> crate::Result<(MatmulKernel, bool)> {
    gpu.sync()?;
    let mark = gpu.pool().mark();
    let mut rng = Rng::new(7);
    let (m, n, k) = (CHECK_M, CHECK_N, CHECK_K);
    let (av, bv) = (
        rng.uniform_vec(m * k, -1.0, 1.0),
        rng.uniform_vec(k * n, -1.0, 1.0),
    );
    let mut reference = vec![0.0f64; m * n];
    for i in 0..m {
        for kk in 0..k {
            let x = av[i * k + kk] as f64;
            let row = &mut reference[i * n..(i + 1) * n];
            for (r, y) in row.iter_mut().zip(&bv[kk * n..(kk + 1) * n]) {
                *r += x * *y as f64;
            }
        }
    }
    let ws = Category::Workspace;
    let (a, b) = (
        Tensor::from_f32(gpu, "autotune check a", &[m * k], &av, ws)?,
        Tensor::from_f32(gpu, "autotune check b", &[k * n], &bv, ws)?,
    );
    let c = Tensor::zeros(gpu, "autotune check c", &[m * n], ws)?;
    let check = MatmulDims::new(m, n, k, Layout::NN);
    let mut valid = vec![];
    for kernel in tune_candidates(gpu) {
        // The first run compiles the pipeline; f32 sums of k products of values in [-1, 1]
        // stay well inside 2e-6·k of the exact value, a kernel run wrongly does not.
        super::matmul::matmul_with(gpu, kernel, check, &a, &b, None, &c, false);
        let out = c.to_f32(gpu)?;
        let agree = out
            .iter()
            .zip(&reference)
            .all(|(x, r)| (*x as f64 - r).abs() <= 2e-6 * k as f64);
        if agree {
            valid.push((f64::INFINITY, kernel));
        } else {
            log::warn!("matmul autotune: {kernel} computes wrong results here; skipped");
        }
    }
    // The fastest of 5 runs each, the candidates taking turns: a machine whose speed drifts
    // (another tenant on the host, a core shared with another thread) then slows them alike.
    // One candidate left needs no timing.
    let rounds = if valid.len() > 1 { 5 } else { 0 };
    if rounds > 0 {
        let (tm, tn, tk) = (TUNE_M, TUNE_N, TUNE_K);
        let (ta, tb, tc) = (
            Tensor::zeros(gpu, "autotune a", &[tm * tk], ws)?,
            Tensor::zeros(gpu, "autotune b", &[tk * tn], ws)?,
            Tensor::zeros(gpu, "autotune c", &[tm * tn], ws)?,
        );
        let timed = MatmulDims::new(tm, tn, tk, Layout::NN);
        for _ in 0..rounds {
            for (fastest, kernel) in &mut valid {
                let t = Instant::now();
                let ms = gpu.gpu_time_ms(|| {
                    super::matmul::matmul_with(gpu, *kernel, timed, &ta, &tb, None, &tc, false)
                })?;
                *fastest = fastest.min(ms.unwrap_or_else(|| t.elapsed().as_secs_f64() * 1e3));
            }
        }
    }
    // Everything above has finished (each timing and check waits); its buffers go back to the
    // driver rather than into the pool's cache.
    gpu.sync()?;
    drop((a, b, c));
    gpu.pool().trim_since(mark);
    Ok((
        valid
            .into_iter()
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .map_or(MatmulKernel::Blocked, |(_, kernel)| kernel),
        rounds > 0,
    ))
}

fn cache_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WGTRAIN_CACHE_DIR") {
        return Some(PathBuf::from(dir).join("matmul-tune.json"));
    }
    dirs::cache_dir().map(|d| d.join("wgtrain").join("matmul-tune.json"))
}

/// adapter key → kernel name. A file that does not parse (another version's) reads as empty
/// and is replaced on the next write.
fn read_cache_file() -> HashMap<String, String> {
    cache_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn read_cache(key: &str) -> Option<MatmulKernel> {
    read_cache_file().remove(key)?.parse().ok()
}

/// Adds this adapter's choice to the cache file, written to a temporary file and renamed so that
/// a concurrent reader never sees half a file.
fn write_cache(key: &str, kernel: MatmulKernel) -> std::io::Result<()> {
    let Some(path) = cache_path() else {
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut all = read_cache_file();
    all.insert(key.to_string(), kernel.to_string());
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_string_pretty(&all)?)?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_round_trip() {
        for (r, c) in SUBGROUP_TILES {
            let k = MatmulKernel::Subgroup {
                row_groups: r,
                col_groups: c,
            };
            assert_eq!(k.to_string().parse::<MatmulKernel>(), Ok(k));
            let k = MatmulKernel::Texture {
                row_groups: r,
                col_groups: c,
            };
            assert_eq!(k.to_string().parse::<MatmulKernel>(), Ok(k));
        }
        assert!("texture:5x1".parse::<MatmulKernel>().is_err());
        for ((rows, cols), _) in TILED_TILES {
            let k = MatmulKernel::Tiled { rows, cols };
            assert_eq!(k.to_string().parse::<MatmulKernel>(), Ok(k));
        }
        assert!("tiled:32x32".parse::<MatmulKernel>().is_err());
        assert_eq!("blocked".parse(), Ok(MatmulKernel::Blocked));
        assert!("subgroup:5x1".parse::<MatmulKernel>().is_err());
        assert!("subgroup:2".parse::<MatmulKernel>().is_err());
        assert!("fast".parse::<MatmulKernel>().is_err());
    }
}
