//! The MPI backend (feature `mpi`) against the in-process one: `mpirun -np 2 wgtrain train
//! --devices mpi` gives `wgtrain train --devices 2`'s losses, mid-run evaluations and checkpoint
//! bit for bit, under ddp, ZeRO 1-3 (also in bf16) and the parameter server (every reduction
//! sums in rank order in both); a rank
//! killed with -9 stops the job without touching the last checkpoint; a rank that hangs stops
//! it at the collectives' timeout.

use crate::cli::{stderr, wgtrain};
use std::path::Path;
use std::process::Command;
use wgtrain::train::checkpoint::Checkpoint;

const CONFIG: &str = r#"{"model": "mlp", "data": "digits", "steps": 5, "batch_size": 48,
  "log_every": 1, "mlp": {"hidden": [32]}}"#;

/// [`CONFIG`] evaluating and checkpointing mid-run (the one loop under MPI).
const MID_RUN: &str = r#"{"model": "mlp", "data": "digits", "steps": 5, "batch_size": 48,
  "log_every": 1, "eval_every": 2, "checkpoint_every": 2, "mlp": {"hidden": [32]}}"#;

fn mpirun(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &np.to_string(),
    ])
    .arg(env!("CARGO_BIN_EXE_wgtrain"))
    .args(args)
    .env("RUST_LOG", "off");
    c
}

/// The training losses a metrics file logged, step by step.
fn losses(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn an_mpi_run_equals_the_in_process_run_bit_for_bit() {
    let dir = crate::TmpDir::new("mpi");
    let config = dir.join("c.json");
    std::fs::write(&config, MID_RUN).unwrap();
    let config = config.to_str().unwrap();
    for mode in [
        &["--parallel", "ddp"][..],
        &["--zero", "1"],
        &["--zero", "2"],
        &["--zero", "3"],
        &["--parallel", "dp"],
        // mixed precision over MPI
        &["--zero", "3", "--precision", "bf16"],
    ] {
        let name = mode.join("");
        let run = |how: &str| {
            let out = dir.join(format!("{name}-{how}"));
            let metrics = dir.join(format!("{name}-{how}.jsonl"));
            let mut args = vec!["train", "--config", config, "--devices"];
            args.push(if how == "mpi" { "mpi" } else { "2" });
            args.extend(mode);
            args.extend(["--out", out.to_str().unwrap()]);
            args.extend(["--metrics", metrics.to_str().unwrap()]);
            let o = if how == "mpi" {
                mpirun(2, &args).output().expect("mpirun runs")
            } else {
                wgtrain(&args)
            };
            assert!(o.status.success(), "{how} {mode:?}: {}", stderr(&o));
            (out.join("checkpoint.safetensors"), metrics)
        };
        let (mpi_ckpt, mpi_metrics) = run("mpi");
        // rank 1's own figures beside rank 0's file
        let rank1 = mpi_metrics.with_extension("rank1.jsonl");
        let text = std::fs::read_to_string(&rank1).unwrap();
        let end: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(end["event"], "end", "{end}");
        assert_eq!(end["rank"], 1, "{end}");
        assert!(end["comm_bytes"].as_u64().unwrap() > 0, "{end}");
        let (ip_ckpt, ip_metrics) = run("in-process");
        let l = losses(&mpi_metrics);
        assert_eq!(l.len(), 5, "{mode:?}: one line a step");
        assert_eq!(l, losses(&ip_metrics), "{mode:?}: losses");
        // the evaluations every eval_every steps and at the end, on rank 0, alike
        let evals = |path: &Path| -> Vec<(u64, f64)> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["event"] == "eval")
                .map(|v| {
                    (
                        v["step"].as_u64().unwrap(),
                        v["eval_loss"].as_f64().unwrap(),
                    )
                })
                .collect()
        };
        let e = evals(&mpi_metrics);
        assert_eq!(
            e.iter().map(|e| e.0).collect::<Vec<_>>(),
            [2, 4, 5],
            "{mode:?}"
        );
        assert_eq!(e, evals(&ip_metrics), "{mode:?}: evaluations");
        let (a, b) = (
            Checkpoint::load(&mpi_ckpt).unwrap(),
            Checkpoint::load(&ip_ckpt).unwrap(),
        );
        assert_eq!(a.meta.step, 5);
        // the same parts (one per rank under ZeRO) holding the same tensors, byte for byte
        assert_eq!(a.parts.len(), b.parts.len(), "{mode:?}");
        let names: Vec<&str> = a.names().collect();
        assert_eq!(names, b.names().collect::<Vec<_>>(), "{mode:?}");
        for name in names {
            assert_eq!(a.info(name), b.info(name), "{mode:?}: {name}");
            assert_eq!(
                a.read(name).unwrap(),
                b.read(name).unwrap(),
                "{mode:?}: {name}"
            );
        }
    }
}

#[test]
fn a_killed_rank_stops_the_job_and_the_last_checkpoint_survives() {
    let dir = crate::TmpDir::new("mpi-kill");
    let config = dir.join("c.json");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.join("run");
    let args = [
        "train",
        "--config",
        config.to_str().unwrap(),
        "--devices",
        "mpi",
    ];
    let out_args = ["--out", out.to_str().unwrap()];
    // a good checkpoint first
    let o = mpirun(2, &[&args[..], &out_args].concat())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = out.join("checkpoint.safetensors");
    let good = std::fs::read(&ckpt).unwrap();
    // then a long run into the same directory; rank 1 is killed once it trains
    let resume = ["--resume", ckpt.to_str().unwrap(), "--steps", "100000000"];
    let child = mpirun(2, &[&args[..], &out_args, &resume].concat())
        .env("WGTRAIN_MPI_TIMEOUT_S", "20")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rank1 = rank_1_of(&out);
    std::thread::sleep(std::time::Duration::from_secs(3));
    Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status()
        .unwrap();
    let killed = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    let waited = killed.elapsed().as_secs_f64();
    let err = stderr(&o);
    assert!(!o.status.success(), "the job failed");
    // mpirun ends the job when a rank dies, and says so (Open MPI's words); the collectives'
    // timeout bounds it otherwise (the next test)
    assert!(err.contains("signal 9"), "{err}");
    assert!(waited < 40.0, "the job took {waited:.1} s to stop");
    // no checkpoint was written over the good one (it is only written at the end)
    assert_eq!(std::fs::read(&ckpt).unwrap(), good);
}

#[test]
fn a_hung_rank_stops_the_job_at_the_collectives_timeout() {
    let dir = crate::TmpDir::new("mpi-hang");
    let config = dir.join("c.json");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.join("run");
    let child = mpirun(
        2,
        &[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--devices",
            "mpi",
            "--steps",
            "100000000",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .env("WGTRAIN_MPI_TIMEOUT_S", "5")
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let rank1 = rank_1_of(&out);
    std::thread::sleep(std::time::Duration::from_secs(2));
    // stopped, not dead: mpirun cannot tell, so only the timeout can end the job
    Command::new("kill")
        .args(["-STOP", &rank1.to_string()])
        .status()
        .unwrap();
    let stopped = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    let waited = stopped.elapsed().as_secs_f64();
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("error: rank 0 of 2:") && err.contains("waited more than 5 s"),
        "{err}"
    );
    assert!((5.0..30.0).contains(&waited), "stopped after {waited:.1} s");
    let _ = Command::new("kill")
        .args(["-9", &rank1.to_string()])
        .status();
}

/// The pid of the rank-1 wgtrain process of the job writing to `out`, once it runs.
fn rank_1_of(out: &Path) -> u32 {
    let started = std::time::Instant::now();
    loop {
        // the rank process: a wgtrain whose environment says rank 1
        let found = std::fs::read_dir("/proc").unwrap().find_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let env = String::from_utf8_lossy(&env);
            let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .ok()?
                .contains(out.to_str().unwrap());
            (ours && env.split('\0').any(|v| v == "OMPI_COMM_WORLD_RANK=1")).then_some(pid)
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(started.elapsed().as_secs() < 60, "rank 1 never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A pipeline whose stages are MPI processes (`--devices mpi --pipeline 2`; with 4 ranks, 2
/// stages × 2 replicas) gives the in-process pipeline's losses, mid-run evaluations and
/// checkpoint parts bit for bit: the links are point-to-point messages of the same bytes, the
/// groups split from MPI's world, every reduction in rank order. The activations (16 KiB a
/// micro-batch) are past MPI's eager limit: sends that waited for their receive deadlocked.
#[test]
fn a_pipeline_over_mpi_equals_the_in_process_pipeline_bit_for_bit() {
    let dir = crate::TmpDir::new("mpi-pipeline");
    let config = dir.join("c.json");
    std::fs::write(
        &config,
        r#"{"model": "gpt", "data": "addition", "steps": 4, "batch_size": 16, "log_every": 1,
            "eval_every": 2, "checkpoint_every": 2, "addition": {"test_size": 10},
            "gpt": {"block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 64}}"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let records = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "step" || v["event"] == "eval")
            .map(|v| {
                format!(
                    "{} {} {} {}",
                    v["event"], v["step"], v["loss"], v["eval_loss"]
                )
            })
            .collect()
    };
    for ranks in ["2", "4"] {
        let run = |how: &str| {
            let out = dir.join(format!("{ranks}-{how}"));
            let metrics = dir.join(format!("{ranks}-{how}.jsonl"));
            let mut args = vec!["train", "--config", config, "--pipeline", "2", "--devices"];
            args.push(if how == "mpi" { "mpi" } else { ranks });
            args.extend(["--out", out.to_str().unwrap()]);
            args.extend(["--metrics", metrics.to_str().unwrap()]);
            // every rank on the adapter the threads share (by default an MPI rank takes the
            // adapter of its local rank: here GL's for rank 1, whose rounding differs)
            args.extend(["--adapter", "0"]);
            let o = match how {
                "mpi" => mpirun(ranks.parse().unwrap(), &args)
                    .output()
                    .expect("mpirun runs"),
                _ => wgtrain(&args),
            };
            assert!(o.status.success(), "{how} on {ranks}: {}", stderr(&o));
            (out.join("checkpoint.safetensors"), metrics)
        };
        let (mpi_ckpt, mpi_metrics) = run("mpi");
        let (ip_ckpt, ip_metrics) = run("threads");
        let (a, b) = (records(&mpi_metrics), records(&ip_metrics));
        assert_eq!(
            a.len(),
            6,
            "{ranks} ranks: 4 steps and 2 evaluations: {a:?}"
        );
        assert_eq!(a, b, "{ranks} ranks: the records");
        let (a, b) = (
            Checkpoint::load(&mpi_ckpt).unwrap(),
            Checkpoint::load(&ip_ckpt).unwrap(),
        );
        assert_eq!((a.meta.step, a.parts.len()), (4, 2), "{ranks} ranks");
        let names: Vec<&str> = a.names().collect();
        assert_eq!(names, b.names().collect::<Vec<_>>(), "{ranks} ranks");
        for name in names {
            assert_eq!(
                a.read(name).unwrap(),
                b.read(name).unwrap(),
                "{ranks}: {name}"
            );
        }
    }
}
