//! Fine-tuning models made elsewhere: `tests/data/hf/tiny-llama` (and its GGUF twin) on the
//! JSONL records of `tests/data/sft`, through the trainer as the CLI runs it: the chat
//! template's assistant turns are what trains, the held-out loss falls, the adapter comes out
//! under PEFT's names and reloads onto a freshly loaded base with the same loss.

use crate::cli::{fails_with, stderr, wgtrain};
use std::path::{Path, PathBuf};
use wgtrain::data::jsonl::Record;
use wgtrain::import::{Pretrained, Vocab};
use wgtrain::nn::{Build, Model};
use wgtrain::train::adapter::Adapter;
use wgtrain::train::sft::{encode, Sft};
use wgtrain::train::{Local, TrainConfig, Trainer};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

#[test]
fn only_the_assistant_turns_train_and_batches_pad_without_targets() {
    let vocab = Vocab::load(&data("hf/tiny-llama")).unwrap();
    let chat = Record::Messages(vec![
        ("system".into(), "be brief".into()),
        ("user".into(), "cat and dog?".into()),
        ("assistant".into(), "dog then cat".into()),
        ("user".into(), "sun and moon?".into()),
        ("assistant".into(), "moon then sun".into()),
    ]);
    let e = encode(&chat, &vocab, false).unwrap();
    // the trained tokens, in runs: each reply and its end of turn, nothing of the prompts
    let mut runs = vec![];
    let mut run: Vec<u32> = vec![];
    for (&id, &t) in e.ids.iter().zip(&e.trained) {
        if t {
            run.push(id);
        } else if !run.is_empty() {
            runs.push(
                vocab
                    .tokenizer
                    .decode(&std::mem::take(&mut run), false)
                    .unwrap(),
            );
        }
    }
    if !run.is_empty() {
        runs.push(vocab.tokenizer.decode(&run, false).unwrap());
    }
    assert_eq!(
        runs,
        ["dog then cat<|im_end|>\n", "moon then sun<|im_end|>\n"]
    );
    // the whole conversation is the template's rendering, tokenized once
    let text = vocab
        .chat
        .render(
            &[
                wgtrain::import::chat::Message::new("system", "be brief"),
                wgtrain::import::chat::Message::new("user", "cat and dog?"),
                wgtrain::import::chat::Message::new("assistant", "dog then cat"),
                wgtrain::import::chat::Message::new("user", "sun and moon?"),
                wgtrain::import::chat::Message::new("assistant", "moon then sun"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(e.ids, vocab.tokenizer.encode(&text).unwrap());
    // --train-on-prompts: everything; text records: everything, EOS last
    assert!(encode(&chat, &vocab, true)
        .unwrap()
        .trained
        .iter()
        .all(|&t| t));
    let t = encode(&Record::Text("the cat".into()), &vocab, false).unwrap();
    assert_eq!(t.ids.last().copied(), vocab.tokenizer.eos);
    assert!(t.trained.iter().all(|&t| t));

    // a batch: rows padded to the longest (a multiple of 16) with PAD targets
    let sft = Sft::load(&data("sft"), &vocab, 64, false).unwrap();
    assert_eq!((sft.train.len(), sft.valid.len(), sft.dropped), (48, 8, 0));
    let picked: Vec<_> = sft.valid.iter().take(3).collect();
    let wgtrain::nn::Batch::Tokens { x, y, seq } = sft.batch(&picked) else {
        unreachable!()
    };
    let longest = picked.iter().map(|e| e.ids.len() - 1).max().unwrap();
    assert_eq!(seq, longest.div_ceil(16) * 16);
    for (row, e) in picked.iter().enumerate() {
        let n = e.ids.len() - 1;
        assert_eq!(&x[row * seq..row * seq + n], &e.ids[..n]);
        let targets = &y[row * seq..(row + 1) * seq];
        for (i, &t) in targets.iter().enumerate() {
            let want = if i < n && e.trained[i + 1] {
                e.ids[i + 1]
            } else {
                wgtrain::ops::softmax_xent::PAD
            };
            assert_eq!(t, want, "row {row} position {i}");
        }
    }
    // cut to a short context, examples with nothing left to learn are dropped
    // (the prompts are 29-31 tokens under this small vocabulary)
    let short = Sft::load(&data("sft"), &vocab, 30, false).unwrap();
    assert!(
        short.dropped > 0 && short.train.len() < 48,
        "{}",
        short.dropped
    );
    assert!(short.train.iter().all(|e| e.ids.len() <= 31));
}

/// The fine-tune the CLI runs, as a library call: LoRA on tiny-llama's attention.
fn fine_tune(base: &Path, out: &Path, steps: u64) -> TrainConfig {
    let gpt = wgtrain::import::model_config(base).unwrap();
    let mut c = TrainConfig::fine_tune(
        gpt,
        base.to_str().unwrap(),
        data("sft").to_str().unwrap(),
        true,
    );
    c.steps = steps;
    c.gpt.block_size = 48;
    c.lr = 1e-2;
    c.eval_every = 0;
    c.out = Some(out.display().to_string());
    c
}

#[test]
fn a_lora_fine_tune_lowers_the_held_out_loss_and_its_peft_adapter_reloads() {
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let out = crate::TmpDir::new("finetune-lora");
    let recorder = crate::Recorder::new(out.join("kept"));
    let mut config = fine_tune(&data("hf/tiny-llama"), &out, 30);
    // the LM head trained in full beside the adapters (PEFT's modules_to_save)
    config.lora.as_mut().unwrap().modules_to_save = vec!["lm_head".into()];
    let mut t = Trainer::new(&gpu, config.clone()).unwrap();
    let report = t.init_from(&data("hf/tiny-llama")).unwrap();
    assert_eq!(report.restored.len(), 21, "every tensor of the directory");
    assert_eq!(
        report.fresh.len(),
        8,
        "A and B of q_proj and v_proj in 2 layers"
    );
    let fit = t.fit(&mut Local, &recorder).unwrap();
    let lines = recorder.take();
    // the base's loss first (step 0), then the fine-tune's
    let before = base_loss(&lines);
    let after = fit.eval.unwrap().loss;
    assert!(
        after < 0.8 * before,
        "held-out loss {before} → {after}: the fine-tune did not learn the replies"
    );

    // the adapter: PEFT's names and config for a Llama
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(cfg["fan_in_fan_out"], false);
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    let base = cfg["base_model_name_or_path"].as_str().unwrap();
    assert!(Path::new(base).is_absolute() && Path::new(base).join("config.json").exists());
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut names: Vec<_> = meta.tensors().into_keys().collect();
    names.sort();
    assert_eq!(names.len(), 9);
    assert_eq!(names[0], "base_model.model.lm_head.weight");
    assert_eq!(
        names[1],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    assert_eq!(cfg["modules_to_save"], serde_json::json!(["lm_head"]));

    // reloaded onto a freshly loaded base: the same held-out loss, bit for bit
    let mut p = Pretrained::load(&Build::new(&gpu), &data("hf/tiny-llama")).unwrap();
    Adapter::load(&out)
        .unwrap()
        .apply(&gpu, &mut p.model)
        .unwrap();
    let task = wgtrain::train::load_task(&config).unwrap();
    let again = wgtrain::train::eval::evaluate(
        &gpu,
        &mut p.model,
        &mut wgtrain::train::eval::Whole,
        &task,
        &config,
    )
    .unwrap();
    assert_eq!(
        again.loss.to_bits(),
        after.to_bits(),
        "{} vs {after}",
        again.loss
    );

    // merged into the base as a Hugging Face directory (with the tokenizer and template):
    // the adapted model's logits, up to the rounding of W + scale·B·A folded in f32
    let merged = out.join("merged");
    let o = wgtrain(&[
        "merge",
        "--model",
        data("hf/tiny-llama").to_str().unwrap(),
        "--lora",
        out.to_str().unwrap(),
        "--hf",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = Pretrained::load(&Build::new(&gpu), &merged).unwrap();
    assert_eq!(
        m.vocab.tokenizer.encode("cat and dog?").unwrap(),
        p.vocab.tokenizer.encode("cat and dog?").unwrap()
    );
    assert_eq!(m.vocab.chat.source(), p.vocab.chat.source());
    let (a, b) = (logits(&gpu, &m.model, 277), logits(&gpu, &p.model, 277));
    let worst = largest_difference(&a, &b);
    assert!(worst < 1e-4, "merged against adapted: {worst:e}");
}

#[test]
fn a_gguf_base_fills_the_same_weights_as_its_directory_and_the_cli_fine_tunes_it() {
    // tiny-gpt2.gguf is ../hf/tiny-gpt2's weights and tokenizer in llama.cpp's layout (make.py):
    // a fine-tune starting from it holds the directory's model (B = 0: the adapters add
    // nothing yet) and reads text as the directory's tokenizer does
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let gguf = data("gguf/tiny-gpt2.gguf");
    let out = crate::TmpDir::new("finetune-gguf");
    // plain text records (a conversation outgrows this model's 32 positions)
    let texts = out.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    let lines: String = [
        "cat and dog",
        "dog then cat",
        "sun and moon",
        "moon then sun",
    ]
    .iter()
    .map(|t| format!("{{\"text\": \"{t}\"}}\n"))
    .collect();
    std::fs::write(texts.join("train.jsonl"), &lines).unwrap();
    std::fs::write(texts.join("valid.jsonl"), &lines).unwrap();
    let mut c = fine_tune(&gguf, &out, 0);
    c.data = texts.display().to_string();
    c.gpt.block_size = 24; // shorter than the file's 32: the position table's first rows
    let mut t = Trainer::new(&gpu, c).unwrap();
    t.init_from(&gguf).unwrap();
    let p = Pretrained::load(&Build::new(&gpu), &data("hf/tiny-gpt2")).unwrap();
    let text = "cat and dog? dog then cat";
    let tokens = p.vocab.tokenizer.encode(text).unwrap();
    assert_eq!(
        Vocab::load(&gguf).unwrap().tokenizer.encode(text).unwrap(),
        tokens
    );
    let batch = wgtrain::nn::Batch::Tokens {
        x: tokens.clone(),
        y: tokens.clone(),
        seq: tokens.len(),
    };
    let a = t.model.logits(&gpu, &batch).unwrap().to_f32(&gpu).unwrap();
    let b = Model::logits(&p.model, &gpu, &batch)
        .unwrap()
        .to_f32(&gpu)
        .unwrap();
    assert_eq!(a, b);

    // the CLI: finetune --model FILE.gguf, a few steps, the adapter written
    let out_s = out.join("run");
    let o = wgtrain(&[
        "finetune",
        "--model",
        gguf.to_str().unwrap(),
        "--data",
        texts.to_str().unwrap(),
        "--steps",
        "4",
        "--max-length",
        "24",
        "--lora-targets",
        "all-linear",
        "--out",
        out_s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("step      0 | eval loss"), "{err}");
    let cfg = std::fs::read_to_string(out_s.join("adapter_config.json")).unwrap();
    // PEFT takes it as the whole value, not in a list
    assert!(cfg.contains("\"target_modules\": \"all-linear\""), "{cfg}");
    assert!(
        cfg.contains("\"fan_in_fan_out\": true"),
        "GPT-2's Conv1D: {cfg}"
    );
    // all-linear: GPT-2's four linears a block, two blocks, A and B each, under PEFT's names
    let bytes = std::fs::read(out_s.join("adapter_model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = meta.tensors();
    assert_eq!(tensors.len(), 16);
    assert!(tensors.contains_key("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"));
}

#[test]
fn bad_fine_tuning_input_fails_cleanly_naming_the_problem() {
    let base = data("hf/tiny-llama");
    let base = base.to_str().unwrap();
    let sft = data("sft");
    let sft = sft.to_str().unwrap();
    fails_with(&["finetune", "--data", sft], &["finetune needs --model"]);
    fails_with(&["finetune", "--model", base], &["needs --data"]);
    fails_with(
        &["finetune", "--model", "no-such-model", "--data", sft],
        &["--model takes mlp, gpt, or a model to fine-tune"],
    );
    fails_with(
        &[
            "finetune",
            "--model",
            base,
            "--data",
            sft,
            "--lora-targets",
            "qkv",
        ],
        &[
            "lora target \"qkv\" matches no layer",
            "q_proj",
            "down_proj",
        ],
    );
    fails_with(
        &[
            "finetune",
            "--model",
            base,
            "--data",
            sft,
            "--max-length",
            "100000",
        ],
        &["longer than the model's context, 64 tokens"],
    );
    let dir = crate::TmpDir::new("finetune-bad");
    let readme = data("sft/README.md");
    fails_with(
        &[
            "finetune",
            "--model",
            base,
            "--data",
            readme.to_str().unwrap(),
        ],
        &["fine-tunes on a directory of JSONL records"],
    );
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"text\": \"a\"}\n{\"prompt\": \"q\"}\n",
    )
    .unwrap();
    fails_with(
        &["finetune", "--model", base, "--data", dir.to_str().unwrap()],
        &["train.jsonl:2: \"completion\" is not a string"],
    );
    // JSONL data without a tokenizer to read it
    fails_with(
        &["train", "--data", sft],
        &["fine-tuning data (JSONL): it needs a model with a tokenizer"],
    );
}

/// The base's held-out loss: the step-0 evaluation a fine-tune reports (a Recorder's line).
fn base_loss(lines: &[String]) -> f32 {
    let line = lines.iter().find(|l| l.starts_with("eval 0 ")).unwrap();
    f32::from_bits(u32::from_str_radix(line.rsplit(' ').next().unwrap(), 16).unwrap())
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of `model` for a fixed sequence.
fn logits(gpu: &wgtrain::Gpu, model: &dyn Model, vocab: u32) -> Vec<f32> {
    let tokens: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % vocab).collect();
    let batch = wgtrain::nn::Batch::Tokens {
        x: tokens.clone(),
        y: tokens,
        seq: 12,
    };
    model.logits(gpu, &batch).unwrap().to_f32(gpu).unwrap()
}

#[test]
fn qlora_keeps_the_base_quantized_and_computes_what_its_decoded_weights_do() {
    let gpu = wgtrain::Gpu::new(None).unwrap();
    // a GGUF base keeps its own blocks (tiny-llama.gguf: Q8_0, Q4_1, Q4_0, F16 and BF16
    // matrices): decoded per product by the decoder the dense load uses, then the same matmul,
    // so the logits are the dense model's bit for bit
    let gguf = data("gguf/tiny-llama.gguf");
    let gpt = wgtrain::import::model_config(&gguf).unwrap();
    let mut c = TrainConfig::fine_tune(gpt, gguf.to_str().unwrap(), "", true);
    c.lora = Some(wgtrain::nn::lora::LoraConfig {
        targets: vec!["all-linear".into()],
        ..Default::default()
    });
    c.qlora = Some(Default::default());
    let mut q = wgtrain::train::base_model(&gpu, &c).unwrap();
    let dense = wgtrain::import::llama::load(&Build::new(&gpu), &gguf).unwrap();
    assert_eq!(logits(&gpu, q.as_ref(), 64), logits(&gpu, &dense, 64));
    let held = wgtrain::memory::Quantized::of(q.as_mut());
    // two blocks of q, o (32×32), k, v (16×32), gate, up (64×32), down (32×64)
    assert_eq!(held.weights, 2 * (2 * 32 * 32 + 2 * 16 * 32 + 3 * 64 * 32));
    let mut formats: Vec<String> = q
        .linears_mut()
        .iter()
        .map(|l| match &l.weight {
            wgtrain::nn::linear::Weight::Quantized { quant, .. } => quant.format_name(),
            _ => panic!("{} is not quantized", l.name()),
        })
        .collect();
    formats.sort();
    formats.dedup();
    assert!(
        formats.len() >= 4,
        "the file's block types, kept: {formats:?}"
    );

    // a Hugging Face base (f32) is quantized to NF4 on the host: the dequantizing matmul
    // against the dense model holding the same weights decoded on the host
    let dir = data("hf/tiny-llama");
    let gpt = wgtrain::import::model_config(&dir).unwrap();
    let mut c = TrainConfig::fine_tune(gpt, dir.to_str().unwrap(), "", true);
    c.qlora = Some(Default::default());
    c.lora.as_mut().unwrap().targets = vec!["all-linear".into()];
    let q = wgtrain::train::base_model(&gpu, &c).unwrap();
    let mut dense = Pretrained::load(&Build::new(&gpu), &dir).unwrap();
    for l in dense.model.linears_mut() {
        let (rows, cols) = (l.out_features, l.in_features);
        let w = l.w().value().to_f32(&gpu).unwrap();
        let nf4 =
            wgtrain::quant::quantize(wgtrain::quant::Method::Nf4 { block: 64 }, &w, rows, cols)
                .unwrap();
        l.w().value().write_f32(&gpu, &nf4.dequantize());
    }
    let (a, b) = (
        logits(&gpu, q.as_ref(), 277),
        logits(&gpu, &dense.model, 277),
    );
    // the same weights and products; the dequantizing matmul sums each output's k in order,
    // the dense one in its tiles' order: f32 rounding of sums of 32-48 terms, logits ~1-5
    let worst = largest_difference(&a, &b);
    assert!(worst < 1e-4, "largest logit difference {worst:e}");
}

#[test]
fn a_qlora_fine_tune_learns_and_resumes_from_its_lean_checkpoint_bit_for_bit() {
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let out = crate::TmpDir::new("finetune-qlora");
    let mut config = fine_tune(&data("hf/tiny-llama"), &out, 12);
    config.qlora = Some(Default::default());
    config.checkpoint_every = 6;
    let recorder = crate::Recorder::new(out.join("kept"));
    let mut t = Trainer::new(&gpu, config.clone()).unwrap();
    t.init_from(&data("hf/tiny-llama")).unwrap();
    let fit = t.fit(&mut Local, &recorder).unwrap();
    let lines = recorder.take();
    let before = base_loss(&lines);
    let after = fit.eval.unwrap().loss;
    assert!(after < 0.9 * before, "held-out loss {before} → {after}");
    // the checkpoint holds the adapters and their state, not the 33 248 base weights
    let kept = out.join("kept/at6.safetensors");
    let ckpt = wgtrain::train::checkpoint::Checkpoint::load(&kept).unwrap();
    let weights: Vec<_> = ckpt.names().filter(|n| !n.starts_with("optim.")).collect();
    assert_eq!(weights.len(), 8, "{weights:?}");
    assert!(std::fs::metadata(&kept).unwrap().len() < 40_000);
    // resumed at step 6, reading the base from its directory again: the same run
    let mut r = Trainer::new(&gpu, config).unwrap();
    r.resume(&ckpt).unwrap();
    let recorder = crate::Recorder::new(out.join("kept2"));
    r.fit(&mut Local, &recorder).unwrap();
    let tail: Vec<String> = lines
        .iter()
        .skip_while(|l| *l != "checkpoint 6")
        .filter(|l| !l.starts_with("checkpoint"))
        .cloned()
        .collect();
    assert!(!tail.is_empty(), "{lines:?}");
    let resumed: Vec<String> = recorder
        .take()
        .into_iter()
        .filter(|l| !l.starts_with("checkpoint"))
        .collect();
    assert_eq!(resumed, tail);
}

#[test]
fn qlora_trains_alike_on_one_device_under_ddp_zero_and_a_pipeline() {
    // the quantized base whole on every rank and stage, the adapters sharded or split: the
    // same run (eval losses as printed, 4 decimals; the gradient sums' order differs)
    let base = data("hf/tiny-llama");
    let sft = data("sft");
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "finetune",
            "--model",
            base.to_str().unwrap(),
            "--data",
            sft.to_str().unwrap(),
            "--steps",
            "6",
            "--log-every",
            "3",
            "--micro-batch-size",
            "2",
            "--qlora",
        ];
        args.extend(extra);
        let o = wgtrain(&args);
        let err = stderr(&o);
        assert!(o.status.success(), "{extra:?}: {err}");
        err.lines()
            .filter(|l| l.contains("eval loss") && l.starts_with("step"))
            .map(String::from)
            .collect()
    };
    let one = run(&[]);
    assert_eq!(one.len(), 2, "{one:?}");
    for extra in [
        &["--devices", "2"][..],
        &["--devices", "2", "--zero", "3"],
        &["--pipeline", "2"],
    ] {
        assert_eq!(run(extra), one, "{extra:?}");
    }
}

#[test]
fn peft_loads_the_adapter_onto_transformers_with_the_same_logits_where_installed() {
    // PEFT itself (tests/data/sft/peft_check.py) where python3 has torch, transformers and
    // peft; said, not passed silently, where it has not
    let python = std::env::var("WGTRAIN_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = std::process::Command::new(&python)
        .args(["-c", "import torch, transformers, peft"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!(
            "SKIPPED peft check: {python} cannot import torch, transformers and peft (pip \
             install them, or point WGTRAIN_PYTHON at a python that can)"
        );
        return;
    }
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let out = crate::TmpDir::new("finetune-peft");
    // tiny-llama with adapters on every linear (a QLoRA run, its base as transformers holds
    // it: f32); SmolLM2 (a GGUF file transformers dequantizes as wgtrain does) where present
    let smollm2 = data("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut bases = vec![(data("hf/tiny-llama"), true, 1e-4)];
    if smollm2.exists() {
        // 30 blocks in f32, logits up to ~30
        bases.push((smollm2, false, 2e-3));
    }
    for (base, tiny, tolerance) in bases {
        let run = out.join(if tiny { "tiny" } else { "smollm2" });
        let mut config = fine_tune(&base, &run, if tiny { 8 } else { 1 });
        config.lora.as_mut().unwrap().targets = vec!["all-linear".into()];
        if tiny {
            config.lora.as_mut().unwrap().modules_to_save = vec!["lm_head".into()];
        }
        config.qlora = Some(Default::default());
        if !tiny {
            config.data = data("sft").display().to_string();
            config.batch_size = 1;
            config.gpt.block_size = 64;
        }
        let mut t = Trainer::new(&gpu, config).unwrap();
        t.init_from(&base).unwrap();
        t.fit(&mut Local, &()).unwrap();
        drop(t);
        let mut p = Pretrained::load(&Build::new(&gpu), &base).unwrap();
        Adapter::load(&run)
            .unwrap()
            .apply(&gpu, &mut p.model)
            .unwrap();
        let tokens: Vec<u32> = p
            .vocab
            .tokenizer
            .encode("cat and dog? dog then cat")
            .unwrap();
        let batch = wgtrain::nn::Batch::Tokens {
            x: tokens.clone(),
            y: tokens.clone(),
            seq: tokens.len(),
        };
        let l = Model::logits(&p.model, &gpu, &batch)
            .unwrap()
            .to_f32(&gpu)
            .unwrap();
        drop(p);
        let ref_path = run.join("logits.json");
        let json = serde_json::json!({"tokens": tokens, "logits": l});
        std::fs::write(&ref_path, json.to_string()).unwrap();
        // the tiny one merged too, which transformers loads as a directory of its own
        let merged = run.join("merged");
        let mut args = vec![base.clone(), run.clone(), ref_path.clone()];
        if tiny {
            let o = wgtrain(&[
                "merge",
                "--model",
                base.to_str().unwrap(),
                "--lora",
                run.to_str().unwrap(),
                "--hf",
                merged.to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
            args.push(merged);
        }
        let o = std::process::Command::new(&python)
            .arg(data("sft/peft_check.py"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
                .unwrap();
        // two f32 forwards in different summation orders
        let diff = r["max_abs_diff"].as_f64().unwrap();
        eprintln!(
            "peft check on {}: largest logit difference {diff:e}",
            base.display()
        );
        assert!(
            diff < tolerance,
            "{}: PEFT's logits differ from wgtrain's by {diff:e}",
            base.display()
        );
        if let Some(m) = r["merged_max_abs_diff"].as_f64() {
            // W + scale·B·A folded in f32, then transformers' forward
            eprintln!("transformers on the merged directory: largest logit difference {m:e}");
            assert!(
                m < tolerance,
                "the merged directory's logits differ by {m:e}"
            );
        }
    }
}

#[test]
fn the_cli_resumes_a_fine_tune_and_evaluates_its_lean_checkpoint() {
    // `finetune --resume` (no --model: the base is in the checkpoint's config) continues to
    // the uninterrupted run's result, and `eval --checkpoint` rebuilds the model from the base
    // file and the adapters
    let base = data("hf/tiny-llama");
    let sft = data("sft");
    let dir = crate::TmpDir::new("finetune-cli-resume");
    let (whole, cut) = (dir.join("whole"), dir.join("cut"));
    let finetune = |steps: &str, out: &Path, resume: bool| -> String {
        let mut args = vec!["finetune", "--steps", steps, "--out", out.to_str().unwrap()];
        let ckpt = out.join("checkpoint.safetensors");
        if resume {
            args.extend(["--resume", ckpt.to_str().unwrap()]);
        } else {
            args.extend([
                "--model",
                base.to_str().unwrap(),
                "--data",
                sft.to_str().unwrap(),
                "--qlora",
            ]);
        }
        let o = wgtrain(&args);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        err.lines()
            .find(|l| l.starts_with("done:"))
            .unwrap()
            .to_string()
    };
    let uninterrupted = finetune("12", &whole, false);
    finetune("8", &cut, false);
    let resumed = finetune("12", &cut, true);
    let eval = |l: &str| l.split(" | ").nth(1).unwrap().to_string();
    assert_eq!(eval(&resumed), eval(&uninterrupted));
    let o = wgtrain(&[
        "eval",
        "--checkpoint",
        cut.join("checkpoint.safetensors").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(printed.contains(&eval(&resumed)), "{printed} vs {resumed}");
}
