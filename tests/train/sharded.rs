//! No run needs a device that could hold the whole model: under ZeRO 3 and a pipeline the
//! evaluation runs sharded (values gathered a layer group at a time; stages chained) and each
//! rank writes its part of the checkpoint, which opens as one checkpoint, resumes elsewhere and
//! exports to one file on the host.

use crate::Recorder;
use std::path::Path;
use wgtrain::gpu::{Category, Gpu, MemoryStats};
use wgtrain::nn::lora::LoraConfig;
use wgtrain::parallel::ddp::{self, DdpOptions};
use wgtrain::parallel::pipeline::{self, PipelineOptions};
use wgtrain::parallel::InProcess;
use wgtrain::train::checkpoint::{self, Checkpoint};
use wgtrain::train::{Local, TrainConfig, Trainer, CHECKPOINT_FILE};

fn gpt() -> TrainConfig {
    let mut c = TrainConfig {
        batch_size: 8,
        micro_batch_size: 4,
        steps: 4,
        log_every: 1,
        eval_every: 2,
        checkpoint_every: 2,
        ..TrainConfig::default()
    };
    // many layers of few activations: a layer group is a small share of the model
    c.gpt.n_layer = 6;
    c.gpt.n_embd = 64;
    c.addition.test_size = 10;
    c
}

/// Each rank's own values, and its workspace (where values gathered from other ranks go) at
/// its peak, each under the whole model's f32 bytes: no rank ever held the whole model, not
/// for an evaluation nor for a checkpoint (before, both gathered it into workspace).
fn never_whole(what: &str, memory: &[MemoryStats], whole: u64) {
    for (r, m) in memory.iter().enumerate() {
        for cat in [Category::Params, Category::Workspace] {
            let held = m.peak.get(cat);
            assert!(
                held < whole,
                "{what}: rank {r} held {held} bytes of {cat:?}; the model is {whole}"
            );
        }
    }
}

#[test]
fn zero_3_and_pipelines_evaluate_and_checkpoint_in_parts_and_resume_on_one_device() {
    for lora in [false, true] {
        let mut c = gpt();
        if lora {
            // a fine-tune: the frozen base is partitioned too (a ZeRO 3 rank's share, a
            // stage's own layers), in bf16
            c.precision = wgtrain::train::config::Precision::Bf16;
            c.lora = Some(LoraConfig {
                r: 2,
                alpha: 4.0,
                ..LoraConfig::default()
            });
        }
        in_parts(&c, if lora { "lora" } else { "full" });
    }
}

fn in_parts(c: &TrainConfig, what: &str) {
    let dir = crate::TmpDir::new(&format!("sharded-{what}"));
    let gpu = Gpu::new(None).unwrap();
    let one = Recorder::new(dir.join("one"));
    let mut single = c.clone();
    single.out = Some(dir.join("one-out").to_str().unwrap().into());
    let mut t = Trainer::new(&gpu, single).unwrap();
    let whole = 4 * t.model.num_params() as u64;
    t.fit(&mut Local, &one).unwrap();
    let expected = one.take();
    drop(t);
    let evals: Vec<&String> = expected.iter().filter(|l| l.starts_with("eval")).collect();
    assert_eq!(evals.len(), 2, "{what}: {expected:?}");
    let gpus = Gpu::open_n(None, 2).unwrap();
    let eval_lines = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with("eval"))
            .cloned()
            .collect()
    };

    // ZeRO 3 on 2 ranks: the same records as one device (each rank its micro-batch)
    let rec = Recorder::new(dir.join("zero3"));
    let mut cz = c.clone();
    let out = dir.join("zero3-out");
    cz.out = Some(out.to_str().unwrap().into());
    // buckets of a tensor each: the gradients a rank lends out are reduced as they are
    // written, not held for one bucket of the whole model
    let options = DdpOptions {
        zero: 3,
        first_bucket_bytes: 1,
        bucket_bytes: 1,
        ..DdpOptions::default()
    };
    let comms = InProcess::group(2)
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn wgtrain::parallel::Collective>)
        .collect();
    let r = ddp::train_observed(&gpus, comms, &cz, &options, &rec).unwrap();
    assert_eq!(
        rec.take(),
        expected,
        "{what}: ZeRO 3: the records of one device"
    );
    never_whole(&format!("{what}: ZeRO 3"), &r.memory, whole);
    check_parts(&out.join(CHECKPOINT_FILE), 2, &gpu, c);

    // a pipeline of 2 stages: evaluations equal one device's bit for bit (the summation
    // order of the tied embedding's gradient differs, so the steps only within rounding)
    let rec = Recorder::new(dir.join("piped"));
    let mut cp = c.clone();
    let out = dir.join("piped-out");
    cp.out = Some(out.to_str().unwrap().into());
    let options = PipelineOptions {
        schedule: wgtrain::parallel::schedule::Schedule::OneFOneB,
        partition: pipeline::Partition::Params,
        replicas: 1,
        resume: None,
    };
    let r = pipeline::train_observed(&gpus, &cp, &options, &rec).unwrap();
    let piped = rec.take();
    assert_eq!(piped.len(), expected.len(), "{what}: {piped:?}");
    assert_eq!(
        eval_lines(&piped)[0],
        evals[0].clone(),
        "{what}: the first evaluation (before the tied embedding's rounding differs)"
    );
    never_whole(&format!("{what}: a pipeline"), &r.memory, whole);
    check_parts(&out.join(CHECKPOINT_FILE), 2, &gpu, c);
}

/// The checkpoint at `index` is `n` parts, none holding every weight; opened, it resumes on
/// one device; exported, it is one file with the same tensors, byte for byte.
fn check_parts(index: &Path, n: usize, gpu: &Gpu, c: &TrainConfig) {
    let ckpt = Checkpoint::load(index).unwrap();
    assert_eq!(ckpt.parts.len(), n, "{}", index.display());
    let weights: Vec<String> = ckpt
        .names()
        .filter(|n| !n.starts_with("optim."))
        .map(String::from)
        .collect();
    for part in &ckpt.parts {
        let bytes = std::fs::read(part).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let held = file
            .names()
            .into_iter()
            .filter(|n| !n.starts_with("optim."));
        assert!(held.count() < weights.len(), "{}", part.display());
    }
    // the run's parts of step 2 were removed when step 4's index was written
    let dir = index.parent().unwrap();
    let stale = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".step2."))
        .count();
    assert_eq!(stale, 0, "step 2's parts are gone");
    let mut resumed = c.clone();
    resumed.steps = 5;
    let mut t = Trainer::new(gpu, resumed).unwrap();
    t.resume(&ckpt).unwrap();
    assert_eq!(t.step, 4);
    assert!(t.train_step(true).unwrap().unwrap().is_finite());
    let one = dir.join("one.safetensors");
    checkpoint::export(index, &one).unwrap();
    let exported = Checkpoint::load(&one).unwrap();
    assert!(exported.parts.is_empty());
    assert_eq!(exported.meta, ckpt.meta);
    let names: Vec<&str> = ckpt.names().collect();
    assert_eq!(exported.names().collect::<Vec<_>>(), names);
    for name in names {
        assert_eq!(
            exported.read(name).unwrap(),
            ckpt.read(name).unwrap(),
            "{name}"
        );
    }
    // never onto itself or a part
    assert!(checkpoint::export(index, index).is_err());
    assert!(checkpoint::export(index, &ckpt.parts[0]).is_err());
}
