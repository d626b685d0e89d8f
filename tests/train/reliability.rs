//! What wgtrain guarantees against hostile input and crashes: a corpus of bad configs, data,
//! checkpoints, flags, output paths and numerical faults, each failing with exit 1, one `error:`
//! line and no panic, with a good checkpoint left byte for byte as it was; a kill -9 loop over
//! checkpoint writes; the step guard skipping a non-finite step on the GPU.

use crate::cli::{stderr, wgtrain, wgtrain_env as run_env};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::train::{TrainConfig, Trainer};

const CKPT: &str = "checkpoint.safetensors";

/// A safetensors file's parts: its header as JSON and its data.
fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// One case of the corpus: the arguments (with `{good}` for the good checkpoint's path, `{dir}`
/// for the case's directory), extra environment, and what the error line must contain.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    needles: Vec<&'static str>,
}

fn case(name: &'static str, args: &[&str], needles: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        needles: needles.to_vec(),
    }
}

const MLP: &str = r#"{"model": "mlp", "data": "digits", "steps": 3, "batch_size": 16,
  "eval_every": 0, "log_every": 1, "checkpoint_every": 1, "mlp": {"hidden": [16]}}"#;

/// A GPT checkpoint's config tampered: `edit` changes the stored config JSON.
fn with_config(good: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let (mut header, data) = split_safetensors(good);
    let mut config: Value =
        serde_json::from_str(header["__metadata__"]["config"].as_str().unwrap()).unwrap();
    edit(&mut config);
    header["__metadata__"]["config"] = config.to_string().into();
    join_safetensors(&header, &data)
}

#[test]
fn a_corpus_of_bad_input_fails_cleanly_and_loses_no_checkpoint() {
    let dir = crate::TmpDir::new("corpus");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap();
        p(name)
    };
    // the good checkpoints every case must leave alone: an MLP and a 2-layer GPT
    let mlp_cfg = write("mlp.json", MLP.as_bytes());
    let o = wgtrain(&["train", "--config", &mlp_cfg, "--out", &p("good")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let good_path = dir.join("good").join(CKPT);
    let good = std::fs::read(&good_path).unwrap();
    let gpt_cfg = write(
        "gpt.json",
        br#"{"model": "gpt", "data": "addition", "steps": 2, "batch_size": 4, "eval_every": 0,
             "addition": {"test_size": 20},
             "gpt": {"block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16}}"#,
    );
    let o = wgtrain(&["train", "--config", &gpt_cfg, "--out", &p("gpt")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gpt_path = dir.join("gpt").join(CKPT);
    let gpt = std::fs::read(&gpt_path).unwrap();
    let (header, data) = split_safetensors(&good);
    let good_s = good_path.to_str().unwrap().to_string();

    // configs
    let json = |name: &'static str, text: &str| write(name, text.as_bytes());
    let mut cases = vec![
        case(
            "array config",
            &["train", "--config", &json("a.json", "[]")],
            &["JSON object", "array"],
        ),
        case(
            "positional config",
            &[
                "train",
                "--config",
                &json("b.json", r#"["mlp", "digits", 3]"#),
            ],
            &["JSON object"],
        ),
        case(
            "number config",
            &["train", "--config", &json("c.json", "42")],
            &["single value"],
        ),
        case(
            "empty config",
            &["train", "--config", &json("d.json", "")],
            &["empty file"],
        ),
        case(
            "config is a directory",
            &["train", "--config", &p("good")],
            &["is a directory"],
        ),
        case(
            "config is /dev/zero",
            &["train", "--config", "/dev/zero"],
            &["not a regular file"],
        ),
        case(
            "unknown field",
            &["train", "--config", &json("e.json", r#"{"stepz": 3}"#)],
            &["stepz"],
        ),
        case(
            "negative momentum",
            &[
                "train",
                "--config",
                &json(
                    "f.json",
                    r#"{"optimizer": {"name": "momentum", "momentum": -3}}"#,
                ),
            ],
            &["momentum must be"],
        ),
        case(
            "negative eps",
            &[
                "train",
                "--config",
                &json("g.json", r#"{"optimizer": {"name": "adam", "eps": -1e-8}}"#),
            ],
            &["eps must be"],
        ),
        case(
            "negative weight decay",
            &[
                "train",
                "--config",
                &json(
                    "h.json",
                    r#"{"optimizer": {"name": "adamw", "weight_decay": -0.1}}"#,
                ),
            ],
            &["weight_decay must be"],
        ),
        case(
            "max_nonfinite_steps 0",
            &[
                "train",
                "--config",
                &json("i.json", r#"{"max_nonfinite_steps": 0}"#),
            ],
            &["max_nonfinite_steps"],
        ),
        case(
            "huge addition test set",
            &[
                "train",
                "--config",
                &json("j.json", r#"{"addition": {"test_size": 1000000000000000}}"#),
            ],
            &["test_size"],
        ),
        case(
            "vocabulary smaller than the data",
            &[
                "train",
                "--config",
                &json(
                    "k.json",
                    r#"{"gpt": {"vocab_size": 10, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 16}}"#,
                ),
            ],
            &["vocab_size", "62"],
        ),
        case(
            "vocabulary of a billion",
            &[
                "train",
                "--config",
                &json(
                    "l.json",
                    r#"{"gpt": {"vocab_size": 1000000000, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 64}}"#,
                ),
            ],
            &["more than the device's memory"],
        ),
        case(
            "too many tokens per step",
            &[
                "train",
                "--config",
                &json("m.json", r#"{"batch_size": 1000000000}"#),
            ],
            &["tokens per step"],
        ),
        case(
            "negative grad_clip",
            &["train", "--config", &json("n.json", r#"{"grad_clip": -1}"#)],
            &["grad_clip"],
        ),
        case(
            "log_every 0",
            &["train", "--config", &json("o.json", r#"{"log_every": 0}"#)],
            &["log_every"],
        ),
        case(
            "huge dense quadratic",
            &[
                "optimize",
                "--problem",
                "quadratic:100000:10",
                "--method",
                "bfgs",
            ],
            &["at most 8192"],
        ),
    ];
    let mut many_layers = case(
        "a model larger than the device",
        &[
            "train",
            "--config",
            &json(
                "p.json",
                r#"{"gpt": {"n_layer": 1000, "n_head": 4, "n_embd": 128, "block_size": 8}}"#,
            ),
        ],
        &["more than the device's memory", "WGTRAIN_DEVICE_MEMORY"],
    );
    many_layers
        .env
        .push(("WGTRAIN_DEVICE_MEMORY", "64MiB".into()));
    cases.push(many_layers);
    let mut dense = case(
        "a quasi-Newton matrix larger than the device",
        &[
            "optimize",
            "--problem",
            "rosenbrock:1000",
            "--method",
            "bfgs",
        ],
        &["n×n matrix", "use lbfgs"],
    );
    dense.env.push(("WGTRAIN_DEVICE_MEMORY", "1MiB".into()));
    cases.push(dense);
    let mut planned = case(
        "a run whose plan exceeds the device",
        &["train", "--config", &mlp_cfg, "--batch-size", "16384"],
        &["the run's planned peak", "more than the device's memory"],
    );
    planned.env.push(("WGTRAIN_DEVICE_MEMORY", "2MiB".into()));
    cases.push(planned);

    // data
    cases.extend([
        case(
            "data is a directory",
            &["train", "--data", &p("good"), "--steps", "1"],
            &["is a directory"],
        ),
        case(
            "data is /dev/zero",
            &["train", "--data", "/dev/zero", "--steps", "1"],
            &["not a regular file"],
        ),
        case(
            "data is empty",
            &["train", "--data", &write("empty.txt", b""), "--steps", "1"],
            &["empty"],
        ),
        case(
            "data is missing",
            &["train", "--data", &p("nothing.txt"), "--steps", "1"],
            &["nothing.txt"],
        ),
    ]);
    #[cfg(unix)]
    {
        let fifo = p("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            cases.push(case(
                "data is a FIFO",
                &["train", "--data", &fifo, "--steps", "1"],
                &["not a regular file"],
            ));
            cases.push(case(
                "checkpoint is a FIFO",
                &["eval", "--checkpoint", &fifo],
                &["not a regular file"],
            ));
        }
    }

    // checkpoints, crafted from the good one
    let ckpt_cases: Vec<(&'static str, Vec<u8>, &'static [&'static str])> = {
        let mut v: Vec<(&'static str, Vec<u8>, &'static [&'static str])> = vec![
            ("empty checkpoint", vec![], &["too short"]),
            (
                "header length 2^64-1",
                u64::MAX.to_le_bytes().to_vec(),
                &["header length"],
            ),
            (
                "header length past the end",
                {
                    let mut b = good.clone();
                    b[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
                    b
                },
                &["header length"],
            ),
            ("truncated in the header", good[..40].to_vec(), &["header"]),
            (
                "truncated after the header",
                good[..good.len() - data.len()].to_vec(),
                &["truncated"],
            ),
            (
                "truncated in the data",
                good[..good.len() - data.len() / 2].to_vec(),
                &["truncated"],
            ),
            (
                "one byte short",
                good[..good.len() - 1].to_vec(),
                &["truncated"],
            ),
            (
                "one byte over",
                [good.as_slice(), b"x"].concat(),
                &["truncated or corrupted"],
            ),
            (
                "header not JSON",
                {
                    let mut b = good.clone();
                    b[8..16].copy_from_slice(b"garbage!");
                    b
                },
                &["header is invalid"],
            ),
            (
                "random bytes",
                (0..100_000u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                    .collect(),
                &["not a safetensors file"],
            ),
        ];
        let tamper = |edit: &dyn Fn(&mut Value)| {
            let mut h = header.clone();
            edit(&mut h);
            join_safetensors(&h, &data)
        };
        v.push((
            "offsets past the end",
            tamper(&|h| h["fc0.weight"]["data_offsets"][1] = json!(1u64 << 40)),
            &["header is invalid"],
        ));
        v.push((
            "overlapping offsets",
            tamper(&|h| {
                let start = h["fc0.weight"]["data_offsets"][0].as_u64().unwrap();
                h["fc0.bias"]["data_offsets"][0] = json!(start);
            }),
            &["header is invalid"],
        ));
        v.push((
            "a dtype wgtrain does not read",
            tamper(&|h| {
                // F64 of half as many elements: the sizes still agree
                let shape = h["fc0.bias"]["shape"][0].as_u64().unwrap();
                h["fc0.bias"]["dtype"] = json!("F64");
                h["fc0.bias"]["shape"] = json!([shape / 2]);
            }),
            &["wgtrain reads"],
        ));
        v.push((
            "a transposed weight",
            tamper(&|h| {
                let s = h["fc0.weight"]["shape"].clone();
                h["fc0.weight"]["shape"] = json!([s[1], s[0]]);
            }),
            &["the model expects"],
        ));
        v.push((
            "no format",
            tamper(&|h| h["__metadata__"]["wgtrain_format"] = json!("pytorch")),
            &["not a wgtrain checkpoint"],
        ));
        // every file wgtrain writes says format "pt" (Hugging Face's loaders require it) and
        // keeps its own kind under wgtrain_format; a file from before that move still loads
        assert_eq!(header["__metadata__"]["format"], "pt");
        assert_eq!(
            header["__metadata__"]["wgtrain_format"],
            "wgtrain-checkpoint-1"
        );
        let old = tamper(&|h| {
            let m = &mut h["__metadata__"];
            m["format"] = json!("wgtrain-checkpoint-1");
            m.as_object_mut().unwrap().remove("wgtrain_format");
        });
        let old = write("old-format.safetensors", &old);
        let o = wgtrain(&["eval", "--checkpoint", &old]);
        assert!(o.status.success(), "{}", stderr(&o));
        v.push((
            "step not a number",
            tamper(&|h| h["__metadata__"]["step"] = json!("three")),
            &["step"],
        ));
        v.push((
            "an all-zero RNG state",
            tamper(&|h| h["__metadata__"]["rng"] = json!("[0,0,0,0]")),
            &["RNG state"],
        ));
        v.push((
            "config not JSON",
            tamper(&|h| h["__metadata__"]["config"] = json!("{oops")),
            &["config"],
        ));
        v.push((
            "NaN weights",
            {
                let info = &header["fc0.weight"]["data_offsets"];
                let at = info[0].as_u64().unwrap() as usize;
                let mut d = data.clone();
                d[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
                join_safetensors(&header, &d)
            },
            &["NaN or infinite"],
        ));
        v.push((
            "a layer dropped from the config",
            with_config(&gpt, |c| c["gpt"]["n_layer"] = json!(1)),
            &["does not have", "h.1"],
        ));
        v.push((
            "a layer added to the config",
            with_config(&gpt, |c| c["gpt"]["n_layer"] = json!(3)),
            &["has no tensor", "h.2"],
        ));
        v.push((
            "a config claiming 100 000 layers",
            with_config(&gpt, |c| {
                c["gpt"]["n_layer"] = json!(100_000);
                c["gpt"]["n_embd"] = json!(256);
            }),
            // (eval: refused from the closed-form size before anything is built, in ms)
            &["describes a model of 78976068096 weights", "holds 10816"],
        ));
        v
    };
    for (i, (name, bytes, needles)) in ckpt_cases.into_iter().enumerate() {
        let path = write(&format!("bad-{i}.safetensors"), &bytes);
        let verb = ["eval", "sample", "train"][i % 3];
        let mut args = vec![verb.to_string()];
        if verb == "train" {
            args.extend([
                "--resume".into(),
                path.clone(),
                "--steps".into(),
                "9".into(),
            ]);
        } else {
            args.extend(["--checkpoint".into(), path.clone()]);
        }
        cases.push(Case {
            name,
            args,
            env: vec![],
            needles: needles.to_vec(),
        });
    }
    // finite weights whose forward overflows: the loss is NaN, which eval reports as an error
    let overflowing = {
        let info = &header["fc0.weight"]["data_offsets"];
        let (a, b) = (
            info[0].as_u64().unwrap() as usize,
            info[1].as_u64().unwrap() as usize,
        );
        let mut d = data.clone();
        for w in d[a..b].chunks_exact_mut(4) {
            w.copy_from_slice(&3e38f32.to_le_bytes());
        }
        write("overflowing.safetensors", &join_safetensors(&header, &d))
    };
    cases.push(case(
        "weights whose forward overflows",
        &["eval", "--checkpoint", &overflowing],
        &["loss is NaN", "not finite"],
    ));
    cases.push(case(
        "checkpoint is a directory",
        &["sample", "--checkpoint", &p("good")],
        &["is a directory"],
    ));

    // flags and output paths
    cases.extend([
        case(
            "--zero without --devices",
            &["train", "--zero", "1"],
            &["--devices"],
        ),
        case("--devices 0", &["train", "--devices", "0"], &["--devices"]),
        case(
            "--max-memory not a size",
            &["train", "--max-memory", "lots"],
            &["size"],
        ),
        case(
            "--recompute bogus",
            &["train", "--recompute", "sometimes"],
            &["sometimes"],
        ),
        case(
            "--optimizer bogus",
            &["train", "--optimizer", "adamax"],
            &["adamax"],
        ),
        case(
            "--out onto another run's checkpoint",
            &["train", "--config", &mlp_cfg, "--out", &p("good")],
            &["another run", "--overwrite"],
        ),
        case(
            "--out is a file",
            &["train", "--config", &mlp_cfg, "--out", &mlp_cfg],
            &["output directory"],
        ),
    ]);
    // a live process holds the lock (this test's own process)
    let locked = dir.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(locked.join(".wgtrain.lock"), std::process::id().to_string()).unwrap();
    cases.push(case(
        "--out locked by a live run",
        &[
            "train",
            "--config",
            &mlp_cfg,
            "--out",
            locked.to_str().unwrap(),
        ],
        &["in use by another wgtrain run"],
    ));
    // flags that cannot go together, and outputs refused before anything runs
    let missing_dir = p("no-such-dir/trace.json");
    cases.extend([
        case(
            "--init with --resume",
            &["train", "--resume", &good_s, "--init", &good_s],
            &["--init", "--resume", "give one"],
        ),
        case(
            "--metrics names the resumed checkpoint",
            &["train", "--resume", &good_s, "--metrics", &good_s],
            // (the resumed run writes its checkpoint there too)
            &["--metrics", "the same file"],
        ),
        case(
            "--metrics names the config",
            &["train", "--config", &mlp_cfg, "--metrics", &mlp_cfg],
            &["--metrics", "an input of this run"],
        ),
        case(
            "--metrics and --plot name one file",
            &[
                "train",
                "--config",
                &mlp_cfg,
                "--metrics",
                &p("m.svg"),
                "--plot",
                &p("m.svg"),
            ],
            &["the same file"],
        ),
        case(
            "--metrics is the checkpoint's path",
            &[
                "train",
                "--config",
                &mlp_cfg,
                "--out",
                &p("fresh"),
                "--metrics",
                &p("fresh/checkpoint.safetensors"),
            ],
            &["the same file"],
        ),
        case(
            "--trace into a missing directory",
            &[
                "train",
                "--config",
                &gpt_cfg,
                "--pipeline",
                "2",
                "--trace",
                &missing_dir,
            ],
            &["directory does not exist"],
        ),
        case(
            "--metrics is a device",
            &["train", "--config", &mlp_cfg, "--metrics", "/dev/null"],
            &["not a regular file"],
        ),
        case(
            "--devices 1000 (the batch of 16 does not split)",
            &["train", "--config", &mlp_cfg, "--devices", "1000"],
            &["does not split evenly"],
        ),
        case(
            "--devices 0",
            &["train", "--config", &mlp_cfg, "--devices", "0"],
            &["does not split evenly"],
        ),
    ]);

    let (beyond, inputs) = beyond_train_cases(&dir, &good_s, gpt_path.to_str().unwrap());
    cases.extend(beyond);

    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let started = Instant::now();
    // every case runs and is reported on its own: a failing one does not hide the rest
    let mut failed: Vec<String> = vec![];
    for c in &cases {
        let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let o = run_env(&c.args, &env);
        let err = stderr(&o);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        let mut wrong = vec![];
        if o.status.code() != Some(1) {
            wrong.push(format!("exit {:?}, not 1", o.status.code()));
        }
        if err.contains("panicked") {
            wrong.push("panicked".into());
        }
        if errors.len() != 1 {
            wrong.push(format!("{} error lines, not one", errors.len()));
        }
        let first = errors.first().copied().unwrap_or("");
        for n in c.needles.iter().filter(|n| !first.contains(*n)) {
            wrong.push(format!("{n:?} not in the error"));
        }
        if std::fs::read(&good_path).unwrap() != good {
            wrong.push("the good checkpoint changed".into());
        }
        if std::fs::read(&gpt_path).unwrap() != gpt {
            wrong.push("the GPT checkpoint changed".into());
        }
        if !wrong.is_empty() {
            failed.push(format!(
                "{}: {} ({:?}); stderr:\n{err}",
                c.name,
                wrong.join(", "),
                c.args
            ));
        }
    }
    // the other cases' inputs too (quantized model, adapter, metrics, other model files), and
    // no refused command wrote its output
    for (path, bytes) in &inputs {
        if std::fs::read(path).ok().as_ref() != Some(bytes) {
            failed.push(format!("{} changed", path.display()));
        }
    }
    for entry in std::fs::read_dir(&*dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("never") {
            failed.push(format!("{name} was written by a refused command"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
    eprintln!(
        "{} bad-input cases in {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    // a diverging run (a copy of the good one, resumed at lr 1e6 writing a checkpoint every
    // step) stops with the step named, and what it leaves is a finite checkpoint
    let diverge = dir.join("diverge");
    std::fs::create_dir_all(&diverge).unwrap();
    let copy = diverge.join(CKPT);
    std::fs::copy(&good_path, &copy).unwrap();
    let o = run_env(
        &[
            "train",
            "--resume",
            copy.to_str().unwrap(),
            "--out",
            diverge.to_str().unwrap(),
            "--steps",
            "60",
            "--lr",
            "1e6",
        ]
        .map(String::from),
        &[],
    );
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the diverging run should stop: {err}"
    );
    assert!(
        err.contains("NaN or infinite") && !err.contains("panicked"),
        "{err}"
    );
    let left = Checkpoint::load(&copy).expect("a loadable checkpoint stays");
    assert!(left.meta.step >= 3, "{}", left.meta.step);
    for name in left.names() {
        let finite = left
            .read(name)
            .unwrap()
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes(b.try_into().unwrap()).is_finite());
        assert!(
            finite,
            "{name} is not finite in the checkpoint a diverged run left"
        );
    }
    // the good checkpoint still resumes, into its own directory (same run)
    let o = wgtrain(&["train", "--resume", &good_s, "--steps", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(Checkpoint::load(&good_path).unwrap().meta.step, 4);
}

#[test]
fn out_dirs_are_locked_cleaned_and_resumed_into_their_metrics() {
    let dir = crate::TmpDir::new("outdir");
    let cfg = dir.join("mlp.json");
    std::fs::write(&cfg, MLP).unwrap();
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    // a killed writer's temporary file and a lock of a process that is gone
    let stale = out.join(format!(".{CKPT}.tmp-4000000"));
    std::fs::write(&stale, vec![0u8; 1000]).unwrap();
    std::fs::write(out.join(".wgtrain.lock"), "4000000").unwrap();
    let metrics = dir.join("m.jsonl");
    let (cfg_s, out_s, m_s) = (
        cfg.to_str().unwrap(),
        out.to_str().unwrap(),
        metrics.to_str().unwrap(),
    );
    let o = wgtrain(&["train", "--config", cfg_s, "--out", out_s, "--metrics", m_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("removed 1 temporary file"),
        "{}",
        stderr(&o)
    );
    assert!(!stale.exists() && !out.join(".wgtrain.lock").exists());
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    let first = lines(&metrics);
    // resume continues the metrics history instead of truncating it
    let ckpt = out.join(CKPT);
    let o = wgtrain(&[
        "train",
        "--resume",
        ckpt.to_str().unwrap(),
        "--steps",
        "5",
        "--metrics",
        m_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        lines(&metrics) > first,
        "the resumed run appended to the metrics"
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(text.matches("\"event\":\"end\"").count(), 2);
    // a fresh run onto it needs --overwrite
    let o = wgtrain(&["train", "--config", cfg_s, "--out", out_s, "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(Checkpoint::load(&ckpt).unwrap().meta.step, 3);
}

/// Kills a training run that writes a checkpoint every step, at 20+ points, resuming each time:
/// a loadable checkpoint always remains, and the last resume finishes cleanly.
#[test]
fn kill_9_during_checkpoint_writes_always_leaves_a_loadable_checkpoint() {
    kill_loop("kill9", &[], 20, (400, 800));
}

/// The same under `--devices 2 --zero 3`, whose checkpoints are an index and a part per rank:
/// after every kill the index loads with all its parts (their names, steps and sizes checked).
#[test]
fn kill_9_during_sharded_checkpoint_writes_always_leaves_a_loadable_checkpoint() {
    let layout = ["--devices", "2", "--zero", "3"];
    kill_loop("kill9-sharded", &layout, 10, (700, 900));
}

/// `kills` runs of the MLP (checkpointing every step, under `layout`) killed with SIGKILL
/// `delay.0` + up to `delay.1` ms after their start, each resuming the last; the checkpoint
/// always loads, its step never goes back, and a final resume finishes.
fn kill_loop(name: &str, layout: &[&str], kills_wanted: usize, delay: (u64, u64)) {
    let dir = crate::TmpDir::new(name);
    let cfg = dir.join("mlp.json");
    std::fs::write(
        &cfg,
        MLP.replace("\"steps\": 3", "\"steps\": 1000000")
            .replace("\"log_every\": 1", "\"log_every\": 1000"),
    )
    .unwrap();
    let out = dir.join("run");
    let ckpt = out.join(CKPT);
    let mut delays = wgtrain::rng::Rng::new(9);
    let (mut kills, mut seen_steps) = (0, vec![]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while kills < kills_wanted && Instant::now() < deadline {
        let mut args: Vec<String> =
            vec!["train".into(), "--out".into(), out.to_str().unwrap().into()];
        args.extend(layout.iter().map(|a| a.to_string()));
        if ckpt.exists() {
            args.extend(["--resume".into(), ckpt.to_str().unwrap().into()]);
        } else {
            args.extend(["--config".into(), cfg.to_str().unwrap().into()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
            .args(&args)
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // past start-up (about half a second here), into the writes
        let wait = delay.0 + delays.below(delay.1);
        std::thread::sleep(Duration::from_millis(wait));
        if child.try_wait().unwrap().is_some() {
            panic!("the run ended on its own before the kill");
        }
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        kills += 1;
        if ckpt.exists() {
            let c = Checkpoint::load(&ckpt).unwrap_or_else(|e| {
                panic!("after kill {kills}: the checkpoint does not load: {e}")
            });
            seen_steps.push(c.meta.step);
        } else {
            assert!(
                seen_steps.is_empty(),
                "after kill {kills}: the checkpoint vanished"
            );
        }
    }
    assert!(kills >= kills_wanted, "only {kills} kills in the time");
    assert!(
        seen_steps.windows(2).all(|w| w[0] <= w[1]),
        "steps went back: {seen_steps:?}"
    );
    let last = *seen_steps.last().expect("some checkpoint was written");
    let steps = (last + 2).to_string();
    let mut args = vec![
        "train",
        "--resume",
        ckpt.to_str().unwrap(),
        "--steps",
        &steps,
    ];
    args.extend(layout);
    let o = wgtrain(&args);
    assert!(o.status.success(), "the final resume: {}", stderr(&o));
    let done = Checkpoint::load(&ckpt).unwrap();
    assert_eq!(done.meta.step, last + 2);
    // the directory keeps the parts its index names and no others (nor temporaries)
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".part") || n.contains(".tmp-"))
        .collect();
    left.sort();
    let mut named: Vec<String> = done
        .parts
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    named.sort();
    assert_eq!(left, named, "the parts left beside the index");
    eprintln!("{kills} kills, checkpoints at steps {seen_steps:?}");
}

/// The step guard: a step whose loss is NaN changes no weight and no optimizer state, bit for
/// bit, and is counted with its step number; the run stops at max_nonfinite_steps.
#[test]
fn a_non_finite_step_is_skipped_on_the_gpu_and_counted() {
    let gpu = crate::gpu();
    let mut config: TrainConfig = serde_json::from_str(MLP).unwrap();
    config.max_nonfinite_steps = 2;
    let mut t = Trainer::new(gpu, config).unwrap();
    t.train_step(false).unwrap();
    let snapshot = |t: &Trainer| -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = t
            .model
            .params()
            .iter()
            .map(|p| gpu.read_bytes(p.value()).unwrap())
            .collect();
        for (_, slots) in t.optimizer.state() {
            all.extend(slots.iter().map(|(_, s)| gpu.read_bytes(s).unwrap()));
        }
        all
    };
    let before = snapshot(&t);
    // a step with a NaN loss: phases by hand, the loss poisoned before the update
    let batch = t.draw_batch();
    t.forward_backward(&batch).unwrap();
    t.grad_norm().unwrap();
    t.set_loss_sum(f32::NAN);
    t.update().unwrap();
    assert!(
        snapshot(&t) == before,
        "a skipped step changed weights or optimizer state"
    );
    let h = t.health().unwrap();
    assert_eq!(
        (h.skipped, h.first, h.first_loss_bad, h.first_grad_bad),
        (1, Some(2), true, false)
    );
    t.check_health().expect("1 of 2 allowed");
    // a finite step updates again
    t.train_step(false).unwrap();
    assert!(snapshot(&t) != before);
    // an infinite gradient: poison the norm the guard reads
    let batch = t.draw_batch();
    t.forward_backward(&batch).unwrap();
    t.grad_norm().unwrap();
    wgtrain::optim::guard::set_norm_sq(gpu, t.stats(), f32::INFINITY).unwrap();
    t.update().unwrap();
    let h = t.health().unwrap();
    assert_eq!((h.skipped, h.last), (2, Some(4)));
    // the optimizer's steps taken (Adam's t) skip both
    assert_eq!(t.step_state().unwrap().steps_taken, 2);
    let e = t.check_health().unwrap_err().to_string();
    assert!(e.contains("at step 2") && e.contains("1 more since"), "{e}");
    let dir = crate::TmpDir::new("guard");
    let path: PathBuf = dir.join(CKPT);
    let e = t.save(&path).unwrap_err().to_string();
    assert!(
        e.contains("NaN or infinite at step 2") && !path.exists(),
        "{e}"
    );
}

/// `quantize --out` and `merge --out` killed with SIGKILL at random points, 10 times each: the
/// target is always absent or a whole, loadable file (never partial), and after the next
/// finished run no temporary of a killed writer remains beside it.
#[test]
fn kill_9_during_quantize_and_merge_writes_never_leaves_a_partial_output() {
    let dir = crate::TmpDir::new("kill9-outputs");
    let cfg = dir.join("gpt.json");
    std::fs::write(
        &cfg,
        r#"{"model": "gpt", "data": "addition", "steps": 2, "batch_size": 4, "eval_every": 0,
            "addition": {"test_size": 20},
            "gpt": {"block_size": 8, "n_layer": 4, "n_head": 4, "n_embd": 256}}"#,
    )
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = wgtrain(&[
        "train",
        "--config",
        &s(&cfg),
        "--out",
        &s(&dir.join("base")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = s(&dir.join("base").join(CKPT));
    let lora = s(&dir.join("lora"));
    let o = wgtrain(&[
        "train", "--init", &base, "--lora-r", "2", "--steps", "1", "--out", &lora,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (q, m) = (dir.join("q.safetensors"), dir.join("m.safetensors"));
    let quantize = [
        "quantize",
        "--checkpoint",
        &base,
        "--method",
        "int8",
        "--out",
        &s(&q),
    ];
    let merge = [
        "merge",
        "--checkpoint",
        &base,
        "--lora",
        &lora,
        "--out",
        &s(&m),
    ];
    let mut delays = wgtrain::rng::Rng::new(11);
    // kills spread over a run's whole length here (about 0.13 s for quantize, 0.4 s for merge
    // of this 3-million-weight model, start-up included), so some land in the write
    for (what, args, target, span) in [("quantize", &quantize, &q, 150), ("merge", &merge, &m, 450)]
    {
        let (mut whole, mut killed) = (0, 0);
        for kill in 0..10 {
            let mut child = Command::new(env!("CARGO_BIN_EXE_wgtrain"))
                .args(args.iter())
                .arg("--overwrite")
                .env("RUST_LOG", "off")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(10 + delays.below(span)));
            let _ = child.kill();
            let status = child.wait().unwrap();
            killed += usize::from(!status.success());
            if target.exists() {
                whole += 1;
                let loads = match what {
                    "quantize" => wgtrain::quant::file::read(target).map(|_| ()),
                    _ => Checkpoint::load(target).map(|_| ()),
                };
                if let Err(e) = loads {
                    panic!("{what}, kill {kill}: the output is not whole: {e}");
                }
            }
        }
        let mut done: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        done.push("--overwrite".into());
        let done: Vec<&str> = done.iter().map(String::as_str).collect();
        let o = wgtrain(&done);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        let left: Vec<String> = std::fs::read_dir(&*dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{what}: temporaries left: {left:?}");
        assert!(
            killed >= 3,
            "{what}: only {killed} of 10 runs were killed before they ended"
        );
        eprintln!("{what}: {killed} of 10 runs killed mid-run, the output whole after {whole}");
    }
}

/// The corpus's cases for the commands beyond `train` (issue 41's surfaces): crafted quantized
/// files, adapter directories, `merge`/`quantize`/`export`/`plot` outputs, trace paths and
/// device counts. Builds what they need in `dir`: an int8 quantized model of the MLP at
/// `good`, and a LoRA adapter on the GPT at `gpt`.
#[allow(clippy::type_complexity)]
fn beyond_train_cases(dir: &Path, good: &str, gpt: &str) -> (Vec<Case>, Vec<(PathBuf, Vec<u8>)>) {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let q = p("q.safetensors");
    let o = wgtrain(&[
        "quantize",
        "--checkpoint",
        good,
        "--method",
        "int8",
        "--out",
        &q,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lora = p("lora");
    let o = wgtrain(&[
        "train", "--init", gpt, "--lora-r", "2", "--steps", "1", "--out", &lora,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let qbytes = std::fs::read(&q).unwrap();
    let (qheader, qdata) = split_safetensors(&qbytes);
    let put = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap();
        p(name)
    };
    // a quantized file with `value` as the first f32 of `tensor`
    let poke = |name: &str, tensor: &str, value: f32| {
        let at = qheader[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
        let mut d = qdata.clone();
        d[at..at + 4].copy_from_slice(&value.to_le_bytes());
        put(name, &join_safetensors(&qheader, &d))
    };
    let with_meta = |name: &str, key: &str, value: Value| {
        let mut h = qheader.clone();
        h["__metadata__"][key] = value;
        put(name, &join_safetensors(&h, &qdata))
    };
    let huge = {
        let mut c: Value =
            serde_json::from_str(qheader["__metadata__"]["config"].as_str().unwrap()).unwrap();
        c["mlp"]["hidden"] = json!([100000, 100000, 100000]);
        with_meta("q-huge.safetensors", "config", c.to_string().into())
    };
    let extra = {
        let mut h = qheader.clone();
        let end = qdata.len() as u64;
        h["extra.weight"] = json!({"dtype": "F32", "shape": [1], "data_offsets": [end, end + 4]});
        let mut d = qdata.clone();
        d.extend(1f32.to_le_bytes());
        put("q-extra.safetensors", &join_safetensors(&h, &d))
    };
    let renamed = {
        let mut h = qheader.clone();
        let bias = h.as_object_mut().unwrap().remove("fc0.bias").unwrap();
        h["fc9.bias"] = bias;
        put("q-renamed.safetensors", &join_safetensors(&h, &qdata))
    };
    // adapter directories: the good one's files, one of them changed
    let weights = std::fs::read(Path::new(&lora).join("adapter_model.safetensors")).unwrap();
    let config = std::fs::read_to_string(Path::new(&lora).join("adapter_config.json")).unwrap();
    let adapter = |name: &str, config: &str, weights: &[u8]| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("adapter_config.json"), config).unwrap();
        std::fs::write(d.join("adapter_model.safetensors"), weights).unwrap();
        d.to_str().unwrap().to_string()
    };
    let edit = |k: &str, v: Value| {
        let mut c: Value = serde_json::from_str(&config).unwrap();
        c[k] = v;
        c.to_string()
    };
    let nan_weights = {
        let (h, mut d) = split_safetensors(&weights);
        d[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        join_safetensors(&h, &d)
    };
    let a_huge_r = adapter("a-r", &edit("r", json!(1_000_000_000_000u64)), &weights);
    let a_nan = adapter("a-nan", &config, &nan_weights);
    let a_peft = adapter("a-peft", &edit("peft_type", json!("IA3")), &weights);
    let a_alpha = adapter("a-alpha", &edit("lora_alpha", json!(1e39)), &weights);
    let a_dropout = adapter("a-dropout", &edit("lora_dropout", json!(2.0)), &weights);
    let a_targets = adapter("a-targets", &edit("target_modules", json!([])), &weights);
    let a_json = adapter("a-json", "{not json", &weights);
    let a_missing = dir.join("a-missing");
    std::fs::create_dir_all(&a_missing).unwrap();
    std::fs::write(a_missing.join("adapter_model.safetensors"), &weights).unwrap();
    let a_missing = a_missing.to_str().unwrap().to_string();
    // outputs
    let existing = p("existing.safetensors");
    std::fs::copy(&q, &existing).unwrap();
    let link = p("gpt-link.safetensors");
    std::fs::hard_link(gpt, &link).unwrap();
    std::fs::create_dir_all(dir.join("a-dir.svg")).unwrap();
    let metrics = put(
        "m.jsonl",
        b"{\"event\": \"step\", \"step\": 1, \"loss\": 1.0}\n",
    );
    let merge = |l: &str, out: &str| -> Vec<String> {
        ["merge", "--checkpoint", gpt, "--lora", l, "--out", out]
            .map(String::from)
            .to_vec()
    };
    let run = |verb: &str, rest: &[&str]| -> Vec<String> {
        std::iter::once(verb)
            .chain(rest.iter().copied())
            .map(String::from)
            .collect()
    };
    let mut v: Vec<(&'static str, Vec<String>, &'static [&'static str])> = vec![
        (
            "quantized: a NaN scale",
            run(
                "eval",
                &[
                    "--checkpoint",
                    &poke("q1.safetensors", "fc0.weight.qscale", f32::NAN),
                ],
            ),
            &["holds the scale NaN"],
        ),
        (
            "quantized: an infinite scale, sampled",
            run(
                "sample",
                &[
                    "--checkpoint",
                    &poke("q2.safetensors", "fc0.weight.qscale", f32::INFINITY),
                ],
            ),
            &["holds the scale inf"],
        ),
        (
            "quantized: a NaN kept bias",
            run(
                "eval",
                &[
                    "--checkpoint",
                    &poke("q3.safetensors", "fc0.bias", f32::NAN),
                ],
            ),
            &["NaN or infinite"],
        ),
        (
            "quantized: a config claiming a huge model",
            run("eval", &["--checkpoint", &huge]),
            &["describes a model of"],
        ),
        (
            "quantized: an extra tensor",
            run("eval", &["--checkpoint", &extra]),
            &["extra.weight"],
        ),
        (
            "quantized: a tensor renamed",
            run("eval", &["--checkpoint", &renamed]),
            &["fc0.bias"],
        ),
        (
            "quantized: an unknown method",
            run(
                "eval",
                &[
                    "--checkpoint",
                    &with_meta("q-method.safetensors", "method", "fp3".into()),
                ],
            ),
            &["fp3"],
        ),
        (
            "quantized: truncated",
            run(
                "eval",
                &[
                    "--checkpoint",
                    &put("q-cut.safetensors", &qbytes[..qbytes.len() - 9]),
                ],
            ),
            &["truncated"],
        ),
        (
            "quantized: resumed for training",
            run("train", &["--resume", &q]),
            &["is a quantized model"],
        ),
        (
            "adapter: r 10^12",
            merge(&a_huge_r, &p("never1.safetensors")),
            &["r is 1000000000000"],
        ),
        (
            "adapter: NaN weights",
            merge(&a_nan, &p("never2.safetensors")),
            &["NaN or infinite"],
        ),
        (
            "adapter: another PEFT type",
            run("sample", &["--checkpoint", gpt, "--lora", &a_peft]),
            &["peft_type"],
        ),
        (
            "adapter: lora_alpha 1e39",
            run("eval", &["--checkpoint", gpt, "--lora", &a_alpha]),
            &["alpha"],
        ),
        (
            "adapter: lora_dropout 2",
            merge(&a_dropout, &p("never3.safetensors")),
            &["dropout"],
        ),
        (
            "adapter: no target modules",
            merge(&a_targets, &p("never4.safetensors")),
            &["targets"],
        ),
        (
            "adapter: a config that is not JSON",
            merge(&a_json, &p("never5.safetensors")),
            &["not JSON"],
        ),
        (
            "adapter: no adapter_config.json",
            merge(&a_missing, &p("never6.safetensors")),
            &["adapter_config.json"],
        ),
        (
            "adapter: a file, not a directory",
            merge(&q, &p("never7.safetensors")),
            &["adapter_config.json"],
        ),
        (
            "merge onto its base",
            merge(&lora, gpt),
            &["this command's input"],
        ),
        (
            "merge onto the adapter's weights",
            merge(&lora, &format!("{lora}/adapter_model.safetensors")),
            &["this command's input"],
        ),
        (
            "merge onto another model file",
            merge(&lora, &existing),
            &["--overwrite"],
        ),
        (
            "merge into a missing directory",
            merge(&lora, &p("nowhere/m.safetensors")),
            &["No such file"],
        ),
        (
            "quantize onto its checkpoint",
            run(
                "quantize",
                &["--checkpoint", gpt, "--method", "int8", "--out", gpt],
            ),
            &["this command's input"],
        ),
        (
            "quantize onto a hard link to its checkpoint",
            run(
                "quantize",
                &["--checkpoint", gpt, "--method", "int8", "--out", &link],
            ),
            &["this command's input"],
        ),
        (
            "quantize onto a directory",
            run(
                "quantize",
                &["--checkpoint", gpt, "--method", "int8", "--out", &lora],
            ),
            &["is a directory"],
        ),
        (
            "quantize onto /dev/null",
            run(
                "quantize",
                &[
                    "--checkpoint",
                    gpt,
                    "--method",
                    "int8",
                    "--out",
                    "/dev/null",
                ],
            ),
            &["not a regular file"],
        ),
        (
            "quantize onto another model file",
            run(
                "quantize",
                &["--checkpoint", gpt, "--method", "int8", "--out", &existing],
            ),
            &["--overwrite"],
        ),
        (
            "export onto its checkpoint",
            run("export", &["--checkpoint", gpt, "--out", gpt]),
            &["this command's input"],
        ),
        (
            "export onto another model file",
            run("export", &["--checkpoint", gpt, "--out", &existing]),
            &["--overwrite"],
        ),
        (
            "export of a quantized model",
            run(
                "export",
                &["--checkpoint", &q, "--out", &p("never8.safetensors")],
            ),
            &["is a quantized model"],
        ),
        (
            "plot onto its metrics file",
            run("plot", &[&metrics, "--out", &metrics]),
            &[".svg"],
        ),
        (
            "plot onto a directory",
            run("plot", &[&metrics, "--out", &p("a-dir.svg")]),
            &["is a directory"],
        ),
        (
            "plot as PNG",
            run("plot", &[&metrics, "--out", &p("c.png")]),
            &["SVG only"],
        ),
        (
            "--trace-svg into a missing directory",
            run(
                "train",
                &[
                    "--model",
                    "gpt",
                    "--pipeline",
                    "2",
                    "--trace-svg",
                    &p("nowhere/t.svg"),
                ],
            ),
            &["directory does not exist"],
        ),
        (
            "--plot into a missing directory",
            run("train", &["--plot", &p("nowhere/c.svg")]),
            &["directory does not exist"],
        ),
        (
            "--devices 5 for a batch of 64",
            run("train", &["--model", "mlp", "--devices", "5"]),
            &["does not split evenly over 5 ranks"],
        ),
        (
            "bench --json onto a device",
            run("bench", &["--json", "/dev/null"]),
            &["not a regular file"],
        ),
        (
            "optimize --json onto a directory",
            run(
                "optimize",
                &[
                    "--problem",
                    "rosenbrock:10",
                    "--method",
                    "bfgs",
                    "--json",
                    &lora,
                ],
            ),
            &["is a directory"],
        ),
        (
            "--devices 4 --pipeline 3",
            run(
                "train",
                &["--model", "gpt", "--devices", "4", "--pipeline", "3"],
            ),
            &["multiple of 3"],
        ),
    ];
    let cases = v
        .drain(..)
        .map(|(name, args, needles)| Case {
            name,
            args,
            env: vec![],
            needles: needles.to_vec(),
        })
        .collect();
    let lora_dir = Path::new(&lora);
    let inputs = [
        PathBuf::from(&q),
        PathBuf::from(&existing),
        PathBuf::from(&metrics),
        lora_dir.join("adapter_model.safetensors"),
        lora_dir.join("adapter_config.json"),
    ]
    .into_iter()
    .map(|p| {
        let bytes = std::fs::read(&p).unwrap();
        (p, bytes)
    })
    .collect();
    (cases, inputs)
}
