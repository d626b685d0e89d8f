//! LoRA end to end: B = 0 starts from the base model exactly, only the adapters train (no
//! gradient or optimizer state for the base, which stays bit-identical), a LoRA run resumes bit
//! for bit, and the command line writes PEFT's files, applies them unmerged, merges them, and
//! refuses bad input with one clear error and nothing written.

use crate::cli::{fails_with, stderr, wgtrain};
use std::path::Path;
use wgtrain::gpu::Category;
use wgtrain::nn::lora::LoraConfig;
use wgtrain::nn::Batch;
use wgtrain::train::{TrainConfig, Trainer};
use wgtrain::Gpu;

fn text_config(text: &std::path::Path) -> TrainConfig {
    let mut c = TrainConfig {
        data: text.to_str().unwrap().into(),
        batch_size: 4,
        steps: 4,
        ..TrainConfig::default()
    };
    c.gpt.n_layer = 2;
    c.gpt.n_embd = 32;
    c.gpt.block_size = 16;
    c.gpt.vocab_size = 256;
    c
}

fn write_text(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("text.txt");
    std::fs::write(&p, "low-rank adapters on a frozen model. ".repeat(30)).unwrap();
    p
}

#[test]
fn b_zero_starts_from_the_base_and_only_the_adapters_train() {
    let dir = crate::TmpDir::new("lora-train");
    let text = write_text(&dir);
    let gpu = Gpu::new(None).unwrap();
    let base_cfg = text_config(&text);
    let mut lora_cfg = base_cfg.clone();
    lora_cfg.lora = Some(LoraConfig {
        r: 4,
        targets: vec!["attn.qkv".into(), "attn.proj".into(), "mlp.fc".into()],
        ..LoraConfig::default()
    });
    let base = Trainer::new(&gpu, base_cfg).unwrap();
    let mut lora = Trainer::new(&gpu, lora_cfg).unwrap();
    let batch = Batch::Tokens {
        x: (0..32).map(|i| (i * 7 % 256) as u32).collect(),
        y: vec![0; 32],
        seq: 16,
    };
    let l0 = base
        .model
        .logits(&gpu, &batch)
        .unwrap()
        .to_f32(&gpu)
        .unwrap();
    let l1 = lora
        .model
        .logits(&gpu, &batch)
        .unwrap()
        .to_f32(&gpu)
        .unwrap();
    assert_eq!(l0, l1, "B = 0: the adapted model is the base model");

    // only the adapters have gradients and optimizer state (the pool's counters)
    let adapters: u64 = lora
        .model
        .trainable_params()
        .iter()
        .map(|p| {
            assert!(p.name.contains(".lora_"), "{} trains", p.name);
            p.numel() as u64
        })
        .sum();
    // 2 layers × (qkv: 4·32 + 96·4, proj: 4·32 + 32·4, fc: 4·32 + 128·4)
    assert_eq!(adapters, 2 * (512 + 256 + 640));
    let before: Vec<(String, Vec<f32>)> = lora
        .model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value().to_f32(&gpu).unwrap()))
        .collect();
    let grads0 = gpu.memory().live.get(Category::Grads);
    for _ in 0..4 {
        lora.train_step(true).unwrap();
    }
    let m = gpu.memory();
    assert_eq!(
        m.live.get(Category::Grads) - grads0,
        0,
        "no gradient appeared"
    );
    let state: u64 = lora
        .optimizer
        .state()
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, t)| t.bytes()))
        .sum();
    assert_eq!(
        state,
        8 * adapters,
        "AdamW's two moments of the adapters only"
    );
    for (name, b) in &before {
        let p = lora
            .model
            .params()
            .into_iter()
            .find(|p| &p.name == name)
            .unwrap();
        let now = p.value().to_f32(&gpu).unwrap();
        if name.contains(".lora_B") {
            assert_ne!(&now, b, "{name} trains");
        } else if !name.contains(".lora_") {
            assert_eq!(&now, b, "{name} is frozen: bit-identical");
        }
    }
}

#[test]
fn a_lora_run_with_dropout_resumes_bit_for_bit() {
    let dir = crate::TmpDir::new("lora-resume");
    let text = write_text(&dir);
    let gpu = Gpu::new(None).unwrap();
    let mut c = text_config(&text);
    // with dropout: its masks come from the run's seed, step and micro-batch
    c.lora = Some(LoraConfig {
        dropout: 0.1,
        ..LoraConfig::default()
    });
    c.micro_batch_size = 2;
    let ckpt_path = dir.join("c.safetensors");
    let mut straight = Trainer::new(&gpu, c.clone()).unwrap();
    let mut first = Trainer::new(&gpu, c.clone()).unwrap();
    let mut losses = vec![];
    for _ in 0..4 {
        losses.push(straight.train_step(true).unwrap().unwrap());
    }
    // the masks matter: without dropout the same run goes elsewhere
    let mut plain = c.clone();
    plain.lora.as_mut().unwrap().dropout = 0.0;
    let mut without = Trainer::new(&gpu, plain).unwrap();
    let other: Vec<f32> = (0..4)
        .map(|_| without.train_step(true).unwrap().unwrap())
        .collect();
    assert_ne!(losses[3], other[3], "dropout changed the run");
    for _ in 0..2 {
        first.train_step(true).unwrap();
    }
    first.save(&ckpt_path).unwrap();
    let mut resumed = Trainer::new(&gpu, c).unwrap();
    let report = resumed
        .resume(&wgtrain::train::checkpoint::Checkpoint::load(&ckpt_path).unwrap())
        .unwrap();
    assert!(report.unused.is_empty(), "{report:?}");
    let mut again = vec![];
    for _ in 0..2 {
        again.push(resumed.train_step(true).unwrap().unwrap());
    }
    assert_eq!(&losses[2..], &again[..]);
    for (a, b) in straight.model.params().iter().zip(resumed.model.params()) {
        assert_eq!(
            a.value().to_f32(&gpu).unwrap(),
            b.value().to_f32(&gpu).unwrap(),
            "{}",
            a.name
        );
    }
}

#[test]
fn the_cli_writes_peft_files_applies_and_merges_them_and_refuses_bad_input() {
    let dir = crate::TmpDir::new("lora-cli");
    let text = write_text(&dir);
    let cfg = dir.join("base.json");
    let c = text_config(&text);
    std::fs::write(&cfg, serde_json::to_string(&c).unwrap()).unwrap();
    let base_dir = dir.join("base");
    let o = wgtrain(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        base_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let base = base_dir.join("checkpoint.safetensors");
    let base = base.to_str().unwrap();
    let lora_dir = dir.join("lora");
    let lora = lora_dir.to_str().unwrap();
    let o = wgtrain(&[
        "train", "--init", base, "--lora-r", "4", "--steps", "3", "--out", lora,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("LoRA adapter:"), "{}", stderr(&o));

    // PEFT's config and names
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(lora_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 16.0);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["attn.c_attn", "attn.c_proj"])
    );
    for k in [
        "lora_dropout",
        "bias",
        "fan_in_fan_out",
        "use_rslora",
        "base_model_name_or_path",
    ] {
        assert!(!config[k].is_null(), "{k}");
    }
    let weights = lora_dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let a = st
        .tensor("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), [4, 32]);
    let b = st
        .tensor("base_model.model.transformer.h.1.attn.c_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape(), [32, 4]);
    assert_eq!(st.len(), 8, "A and B of two targets in two blocks");
    python_reads(&weights);

    // unmerged and merged give the same evaluation
    let merged = dir.join("merged.safetensors");
    let data = text.to_str().unwrap();
    let eval = |args: &[&str]| {
        let o = wgtrain(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .split(" (step")
            .next()
            .unwrap()
            .to_string()
    };
    let unmerged = eval(&["eval", "--checkpoint", base, "--lora", lora, "--data", data]);
    let o = wgtrain(&[
        "merge",
        "--checkpoint",
        base,
        "--lora",
        lora,
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = eval(&[
        "eval",
        "--checkpoint",
        merged.to_str().unwrap(),
        "--data",
        data,
    ]);
    let plain = eval(&["eval", "--checkpoint", base, "--data", data]);
    assert_eq!(unmerged, m, "merged and unmerged (4 decimals)");
    assert_ne!(plain, m, "the adapter changed the model");
    outputs_never_replace_inputs(&dir, base, lora, &merged);
    let o = wgtrain(&[
        "sample",
        "--checkpoint",
        base,
        "--lora",
        lora,
        "--tokens",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // bad input: one error line, nothing written
    let nothing = dir.join("nothing");
    let out = nothing.to_str().unwrap();
    fails_with(
        &["train", "--init", base, "--lora-r", "0", "--out", out],
        &["lora.r"],
    );
    fails_with(
        &[
            "train",
            "--init",
            base,
            "--lora-r",
            "2",
            "--lora-targets",
            "attn.k",
            "--out",
            out,
        ],
        &["\"attn.k\"", "matches no layer"],
    );
    let mut other = c.clone();
    other.gpt.n_embd = 16;
    let other_cfg = dir.join("other.json");
    std::fs::write(&other_cfg, serde_json::to_string(&other).unwrap()).unwrap();
    fails_with(
        &[
            "train",
            "--config",
            other_cfg.to_str().unwrap(),
            "--init",
            base,
            "--lora-r",
            "2",
            "--out",
            out,
        ],
        &["checkpoint", "model expects"],
    );
    assert!(!nothing.exists(), "a refused run writes nothing");
    // an adapter of another rank than its config says, or for another base
    let bad = dir.join("bad-lora");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(&weights, bad.join("adapter_model.safetensors")).unwrap();
    let cfg_text = std::fs::read_to_string(lora_dir.join("adapter_config.json")).unwrap();
    std::fs::write(
        bad.join("adapter_config.json"),
        cfg_text.replace("\"r\": 4", "\"r\": 8"),
    )
    .unwrap();
    fails_with(
        &[
            "eval",
            "--checkpoint",
            base,
            "--lora",
            bad.to_str().unwrap(),
        ],
        &["lora_A.weight", "has rank 4"],
    );
    // a config's r is checked against the file's shapes before any layer is built from it
    // (r 10^12 aborted on a 2.5·10^14-byte allocation), and NaN weights are refused
    std::fs::write(
        bad.join("adapter_config.json"),
        cfg_text.replace("\"r\": 4", "\"r\": 1000000000000"),
    )
    .unwrap();
    let bad_s = bad.to_str().unwrap();
    let merged = dir.join("never-merged.safetensors");
    let merged = merged.to_str().unwrap();
    let merge_bad = [
        "merge",
        "--checkpoint",
        base,
        "--lora",
        bad_s,
        "--out",
        merged,
    ];
    fails_with(&merge_bad, &["r is 1000000000000", "has rank 4"]);
    fails_with(
        &[
            "sample",
            "--checkpoint",
            base,
            "--lora",
            bad_s,
            "--tokens",
            "2",
        ],
        &["r is 1000000000000"],
    );
    std::fs::write(bad.join("adapter_config.json"), &cfg_text).unwrap();
    let mut nan = std::fs::read(&weights).unwrap();
    let header = u64::from_le_bytes(nan[..8].try_into().unwrap()) as usize;
    nan[8 + header..12 + header].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(bad.join("adapter_model.safetensors"), &nan).unwrap();
    fails_with(&merge_bad, &["NaN or infinite"]);
    assert!(
        !Path::new(merged).exists(),
        "a refused merge writes nothing"
    );
}

/// The adapter file through Python's safetensors reader, when python3 has it (numpy API).
fn python_reads(weights: &std::path::Path) {
    let script = "import sys\nfrom safetensors.numpy import load_file\nt = load_file(sys.argv[1])\n\
                  k = 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight'\n\
                  assert t[k].shape == (4, 32) and str(t[k].dtype) == 'float32', t[k]\nprint(len(t))";
    match std::process::Command::new("python3")
        .args(["-c", script, weights.to_str().unwrap()])
        .output()
    {
        Ok(o) if o.status.success() => {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "8");
        }
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named") => {
            eprintln!("skipped: python3 has no safetensors/numpy module");
        }
        Ok(o) => panic!(
            "python's safetensors: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(_) => eprintln!("skipped: no python3"),
    }
}

/// `merge`, `quantize` and `export` claim their --out before any work: never their own input
/// (by any name), an adapter's file, a directory or a device, nor another model file without
/// --overwrite; every input stays byte for byte; a killed writer's temporary is cleaned.
fn outputs_never_replace_inputs(dir: &Path, base: &str, lora: &str, merged: &Path) {
    let weights = Path::new(lora).join("adapter_model.safetensors");
    let link = dir.join("base-link.safetensors");
    std::fs::hard_link(base, &link).unwrap();
    let files = [Path::new(base), weights.as_path(), merged];
    let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let merged_s = merged.to_str().unwrap();
    let refused = |args: &[&str], why: &str| {
        let o = wgtrain(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("error:") && err.contains(why),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    };
    fn merge<'a>(base: &'a str, lora: &'a str, out: &'a str) -> Vec<&'a str> {
        vec!["merge", "--checkpoint", base, "--lora", lora, "--out", out]
    }
    fn quantize<'a>(base: &'a str, out: &'a str) -> Vec<&'a str> {
        vec![
            "quantize",
            "--checkpoint",
            base,
            "--method",
            "int8",
            "--out",
            out,
        ]
    }
    let merge = |out| merge(base, lora, out);
    let quantize = |out| quantize(base, out);
    refused(&merge(base), "this command's input");
    refused(&merge(weights.to_str().unwrap()), "this command's input");
    refused(&merge(merged_s), "--overwrite");
    refused(&quantize(base), "this command's input");
    refused(&quantize(link.to_str().unwrap()), "this command's input");
    refused(&quantize(lora), "is a directory");
    refused(&quantize("/dev/null"), "not a regular file");
    let export = ["export", "--checkpoint", base, "--out"];
    refused(&[&export[..], &[base]].concat(), "this command's input");
    refused(&[&export[..], &[merged_s]].concat(), "--overwrite");
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(&std::fs::read(f).unwrap(), b, "{} changed", f.display());
    }
    // with --overwrite the merged checkpoint is replaced, and a killed writer's temporary goes
    let stale = dir.join(".merged.safetensors.tmp-999999");
    std::fs::write(&stale, b"partial").unwrap();
    let o = wgtrain(&[&merge(merged_s)[..], &["--overwrite"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stale.exists(),
        "the temporary of a killed merge is removed"
    );
}
