//! `wgtrain bench`: matmul GFLOP/s and training-step times (see `wgtrain::bench`).

use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;
use wgtrain::bench::{
    bench_matmul, bench_w_gpt, bench_w_gpt_s, bench_w_mlp, w_gpt_shapes, Operands, StepOptions,
    StepResult,
};
use wgtrain::gpu::ProfileClock;
use wgtrain::ops::matmul::Layout;
use wgtrain::ops::matmul_tune;
use wgtrain::tensor::DType;
use wgtrain::train::config::Precision;
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A fast smoke run: small shapes, few repetitions (figures not comparable).
    #[arg(long)]
    quick: bool,
    /// Also time every kernel in one more step of each workload and print where the step's time
    /// goes (timestamp queries on GPUs; on CPU adapters, or without TIMESTAMP_QUERY, each
    /// dispatch run alone and timed by the wall clock).
    #[arg(long)]
    profile: bool,
    /// Internal: run one step workload (w-mlp, w-gpt or w-gpt-s, with -fp16 or -bf16 for mixed
    /// precision) and print its result as JSON. `bench`
    /// runs each workload in a child process of its own this way.
    #[arg(long, hide = true)]
    workload: Option<String>,
    /// Internal, with --workload: run the first step only (the parent gives this child empty
    /// caches to measure a machine's very first run).
    #[arg(long, hide = true)]
    cold: bool,
}

/// How a workload child runs.
#[derive(Clone, Copy)]
struct Child {
    quick: bool,
    profile: bool,
    /// First step only, with the autotune's cache and the driver's shader cache out of reach.
    cold: bool,
}

/// Runs one step workload in this process and prints its [`StepResult`] as one JSON line.
fn run_workload(adapter: Option<&str>, name: &str, child: Child) -> Result<()> {
    let (warmup, steps) = match (child.cold, child.quick) {
        (true, _) => (0, 0),
        (false, true) => (1, 2),
        (false, false) => (2, 10),
    };
    let opts = StepOptions {
        warmup,
        steps,
        quick: child.quick,
        profile: child.profile && !child.cold,
    };
    let (base, precision) = [Precision::Fp16, Precision::Bf16]
        .into_iter()
        .find_map(|p| Some((name.strip_suffix(&format!("-{}", p.as_str()))?, p)))
        .unwrap_or((name, Precision::Fp32));
    let r = match base {
        "w-mlp" => bench_w_mlp(adapter, opts, precision)?,
        "w-gpt" => bench_w_gpt(adapter, opts, precision)?,
        "w-gpt-s" => bench_w_gpt_s(adapter, opts, precision)?,
        _ => anyhow::bail!(
            "unknown workload {name:?}; expected w-mlp, w-gpt or w-gpt-s, optionally with -fp16 or -bf16"
        ),
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

/// Each step workload runs in a fresh child process, as a training run does: one device in one
/// process, its first step paying for device creation and shader compilation, and no state
/// left over from the matmul measurements or the other workload. A `cold` child gets an empty
/// autotune cache and the driver's shader cache turned off where the driver has a switch for it
/// (Mesa's MESA_SHADER_CACHE_DISABLE, NVIDIA's __GL_SHADER_DISK_CACHE): a machine's first run.
fn spawn_workload(adapter: Option<&str>, name: &str, child: Child) -> Result<StepResult> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if let Some(a) = adapter {
        cmd.args(["--adapter", a]);
    }
    cmd.args(["bench", "--workload", name]);
    for (on, flag) in [
        (child.quick, "--quick"),
        (child.profile, "--profile"),
        (child.cold, "--cold"),
    ] {
        if on {
            cmd.arg(flag);
        }
    }
    let cold_cache =
        std::env::temp_dir().join(format!("wgtrain-bench-cold-{}-{name}", std::process::id()));
    if child.cold {
        cmd.env("WGTRAIN_CACHE_DIR", &cold_cache)
            .env("MESA_SHADER_CACHE_DISABLE", "true")
            .env("__GL_SHADER_DISK_CACHE", "0");
    }
    let out = cmd.stderr(std::process::Stdio::inherit()).output();
    if child.cold {
        let _ = std::fs::remove_dir_all(&cold_cache);
    }
    let out = out?;
    if !out.status.success() {
        anyhow::bail!("the {name} workload failed ({})", out.status);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| anyhow::anyhow!("the {name} workload printed {line:?}: {e}"))
}

pub fn run(adapter: Option<&str>, args: BenchArgs) -> Result<()> {
    if let Some(path) = &args.json {
        wgtrain::files::claim_output(path, &[], false, "the results")?;
    }
    if let Some(name) = &args.workload {
        let child = Child {
            quick: args.quick,
            profile: args.profile,
            cold: args.cold,
        };
        return run_workload(adapter, name, child);
    }
    let gpu = Gpu::new(adapter)?;
    let info = gpu.info().clone();
    println!(
        "wgtrain {} bench on {} ({:?}, {:?}, driver {} {}); medians; matmuls timed by timestamp queries where offered, steps by wall clock",
        env!("CARGO_PKG_VERSION"),
        info.name,
        info.backend,
        info.device_type,
        info.driver,
        info.driver_info
    );
    // The autotune runs here when nothing is cached, so that no timing below includes it.
    let tuning = matmul_tune::tuning(&gpu);
    let how = match tuning.source {
        "measured" => format!("autotuned in {:.0} ms, now cached", tuning.tune_ms),
        other => other.to_string(),
    };
    println!("matmul kernel (every layout): {} ({how})", tuning.kernel);
    let (warmup, reps) = if args.quick { (1, 3) } else { (2, 10) };
    let mut shapes: Vec<(usize, usize, usize, Layout)> = if args.quick {
        vec![(256, 256, 256, Layout::NN)]
    } else {
        [256, 512, 1024, 2048]
            .iter()
            .map(|&s| (s, s, s, Layout::NN))
            .collect()
    };
    if !args.quick {
        shapes.extend(w_gpt_shapes());
    }
    println!(
        "{:<10} {:<4} {:>6} {:>6} {:>6} {:>10} {:>9}  timing",
        "dtype", "op", "m", "n", "k", "ms", "GFLOP/s"
    );
    // Half precision on the square sizes: the f16 kernel (A and B stored as f16, f32 sums) where
    // the adapter can run it, and the path mixed-precision training takes (half operands read
    // through f32 views, C rounded to half): f16 where the adapter has SHADER_F16, bf16 always.
    let has_f16 = gpu.features().contains(wgpu::Features::SHADER_F16);
    let f16_kernel = has_f16 && matmul_tune::subgroups_usable(&gpu);
    let squares: Vec<_> = shapes
        .iter()
        .filter(|s| s.0 == s.1 && s.1 == s.2)
        .copied()
        .collect();
    let half: Vec<Operands> = [
        (f16_kernel, Operands::F16),
        (has_f16, Operands::Views(DType::F16)),
        (true, Operands::Views(DType::BF16)),
    ]
    .into_iter()
    .filter_map(|(on, o)| on.then_some(o))
    .collect();
    let runs = shapes.into_iter().map(|s| (s, Operands::F32)).chain(
        half.iter()
            .flat_map(|&o| squares.iter().map(move |&s| (s, o))),
    );
    let mut matmuls = vec![];
    for ((m, n, k, layout), operands) in runs {
        let r = bench_matmul(&gpu, m, n, k, layout, operands, warmup, reps)?;
        println!(
            "{:<10} {:<4} {:>6} {:>6} {:>6} {:>10.3} {:>9.2}  {}",
            r.dtype, r.layout, r.m, r.n, r.k, r.ms, r.gflops, r.timing
        );
        matmuls.push(r);
    }
    if !f16_kernel {
        println!("(no f16 kernel: it needs SHADER_F16 and subgroups of 8 lanes)");
    }
    if !has_f16 {
        println!("(no f16 workloads: this adapter has no SHADER_F16)");
    }
    // numpy's sgemm on the same machine in the same run, as the reference point
    let numpy = if args.quick { None } else { numpy_sgemm() };
    match &numpy {
        Some(rows) => println!(
            "numpy sgemm (benches/numpy_sgemm.py, same run): {}",
            rows.iter()
                .map(|(n, g)| format!("{n}³ {g:.1} GFLOP/s"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None if !args.quick => {
            println!("(numpy sgemm reference: needs python3 with numpy and benches/numpy_sgemm.py)")
        }
        None => {}
    }
    drop(gpu);
    let warm = Child {
        quick: args.quick,
        profile: args.profile,
        cold: false,
    };
    let mut step_results = vec![];
    let workloads = WORKLOADS
        .iter()
        .copied()
        .filter(|w| has_f16 || !w.ends_with("-fp16"));
    for name in workloads {
        let mut r = spawn_workload(adapter, name, warm)?;
        // a first step from nothing cached: the full workloads only (it costs a compile of
        // every kernel, seconds on a CPU adapter)
        if !args.quick {
            let cold = Child { cold: true, ..warm };
            r.first_step_cold_ms = Some(spawn_workload(adapter, name, cold)?.first_step_ms);
        }
        step_results.push(r);
    }
    if args.quick {
        println!("(--quick: scaled-down workloads, not the W-MLP, W-GPT and W-GPT-S definitions)");
    }
    // PyTorch's step on this machine's CPU, the same workloads, one after the other with ours
    let torch = if args.quick { None } else { torch_steps() };
    println!(
        "{:<11} {:>9} {:>9} {:>10} {:>9} {:>8}  first step ms: caches as found, nothing cached",
        "step", "ms/step", "tokens/s", "samples/s", "peak MiB", "submits"
    );
    for s in &step_results {
        println!(
            "{:<11} {:>9.1} {:>9} {:>10.0} {:>9.2} {:>8.1}  {:>13.0}, {}",
            s.workload,
            s.ms_per_step,
            s.tokens_per_s
                .map(|t| format!("{t:.0}"))
                .unwrap_or_else(|| "-".into()),
            s.samples_per_s,
            s.peak_bytes as f64 / (1 << 20) as f64,
            s.submits_per_step,
            s.first_step_ms,
            s.first_step_cold_ms
                .map(|t| format!("{t:.0}"))
                .unwrap_or_else(|| "not measured (--quick)".into()),
        );
    }
    match &torch {
        Some(rows) => {
            let ratios: Vec<String> = step_results
                .iter()
                .filter_map(|s| {
                    let (_, ms) = rows.iter().find(|(n, _)| *n == s.workload)?;
                    Some(format!(
                        "{} {:.1} ms ({:.2}x)",
                        s.workload,
                        ms,
                        s.ms_per_step / ms
                    ))
                })
                .collect();
            println!(
                "PyTorch on this CPU (benches/torch_steps.py, same run; wgtrain's step / PyTorch's): {}",
                ratios.join(", ")
            );
        }
        None if !args.quick => {
            println!("(PyTorch reference: needs python3 with torch and benches/torch_steps.py)")
        }
        None => {}
    }
    if args.profile {
        for s in &step_results {
            print_profile(s);
        }
    }
    if let Some(path) = &args.json {
        let out = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "adapter": wgtrain::gpu::AdapterSummary::from_info(0, &info),
            "timing": "matmul: per entry (timestamp queries where offered); steps: wall clock around a sync",
            "quick": args.quick,
            "matmul_kernel": {
                "kernel": tuning.kernel.to_string(),
                "source": tuning.source,
                "tune_ms": tuning.tune_ms,
            },
            "matmul": matmuls,
            "numpy_sgemm": numpy.as_ref().map(|rows| rows
                .iter()
                .map(|(n, g)| json!({"n": n, "gflops": g}))
                .collect::<Vec<_>>()),
            "steps": step_results,
            "torch_steps": torch.as_ref().map(|rows| rows
                .iter()
                .map(|(n, ms)| json!({"workload": n, "ms_per_step": ms}))
                .collect::<Vec<_>>()),
        });
        super::write_output(path, serde_json::to_string_pretty(&out)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The step workloads, each in a child process of its own: fp32, then W-MLP and W-GPT in mixed
/// precision.
const WORKLOADS: [&str; 7] = [
    "w-mlp",
    "w-gpt",
    "w-gpt-s",
    "w-mlp-fp16",
    "w-mlp-bf16",
    "w-gpt-fp16",
    "w-gpt-bf16",
];

/// The standard output of `python3 benches/<script>` (next to the sources this binary was built
/// from), for the reference runs; None when python3, the script or what it imports is missing.
fn python_reference(script: &str) -> Option<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    if !script.is_file() {
        return None;
    }
    let out = std::process::Command::new("python3")
        .arg(&script)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// (workload, ms per step) of PyTorch's CPU step for each workload (`benches/torch_steps.py`).
fn torch_steps() -> Option<Vec<(String, f64)>> {
    // lines: "torch w-mlp: 12.345 ms/step"
    let rows: Vec<(String, f64)> = python_reference("torch_steps.py")?
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("torch ")?.split_once(": ")?;
            Some((
                name.to_string(),
                rest.strip_suffix(" ms/step")?.parse().ok()?,
            ))
        })
        .collect();
    (!rows.is_empty()).then_some(rows)
}

/// (n, GFLOP/s) for numpy's n³ float32 matmul (`benches/numpy_sgemm.py`).
fn numpy_sgemm() -> Option<Vec<(usize, f64)>> {
    // lines: "numpy sgemm 1024x1024x1024: 12.345 ms, 173.9 GFLOP/s"
    let rows: Vec<(usize, f64)> = python_reference("numpy_sgemm.py")?
        .lines()
        .filter_map(|l| {
            let n = l
                .strip_prefix("numpy sgemm ")?
                .split('x')
                .next()?
                .parse()
                .ok()?;
            let g = l
                .rsplit(", ")
                .next()?
                .strip_suffix(" GFLOP/s")?
                .parse()
                .ok()?;
            Some((n, g))
        })
        .collect();
    (!rows.is_empty()).then_some(rows)
}

/// The per-kernel table of a profiled step (`--profile`).
fn print_profile(s: &StepResult) {
    let Some(kernels) = &s.profile else {
        return;
    };
    let c = &s.cost;
    println!(
        "{}: a plain step on the host: {:.0} dispatches; recording {:.1} ms, encoding {:.1} ms, \
         submit {:.1} ms, waiting for the device {:.1} ms",
        s.workload, c.dispatches, c.record_ms, c.encode_ms, c.submit_ms, c.wait_ms
    );
    let total: f64 = kernels.iter().map(|k| k.ms).sum();
    let how = match s.profile_clock {
        Some(ProfileClock::Wall) => {
            "each dispatch a submit of its own, wall clock: its submit and wait are counted"
        }
        _ => "timestamps, one compute pass per dispatch",
    };
    println!(
        "{}: time per kernel in one step ({total:.1} ms in all; {how})",
        s.workload
    );
    println!("{:>9} {:>6} {:>10}  kernel", "ms", "%", "dispatches");
    for k in kernels {
        println!(
            "{:>9.2} {:>6.1} {:>10}  {}",
            k.ms,
            100.0 * k.ms / total,
            k.dispatches,
            k.kernel
        );
    }
}
