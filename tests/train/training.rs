//! Learning, determinism, resume and checkpoints, through the library.

use crate::gpu;
use wgtrain::files::write_atomically;
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::train::{ModelKind, TrainConfig, Trainer};

fn tmp_dir(name: &str) -> crate::TmpDir {
    crate::TmpDir::new(&format!("test-{name}"))
}

/// A small, fast GPT config on the addition task.
fn tiny_addition(steps: u64) -> TrainConfig {
    let mut c = TrainConfig {
        steps,
        batch_size: 8,
        ..TrainConfig::default()
    };
    c.gpt.n_layer = 1;
    c.gpt.n_embd = 32;
    c.addition.test_size = 50;
    c
}

fn weights(trainer: &Trainer) -> Vec<Vec<f32>> {
    trainer
        .model
        .params()
        .iter()
        .map(|p| p.value().to_f32(gpu()).unwrap())
        .collect()
}

#[test]
fn the_digits_mlp_reaches_95_percent_test_accuracy() {
    let mut c = TrainConfig::preset(ModelKind::Mlp, "digits");
    c.steps = 800;
    let mut t = Trainer::new(gpu(), c).unwrap();
    while t.step < t.config.steps {
        t.train_step(false).unwrap();
    }
    let r = t.evaluate().unwrap();
    let acc = r.accuracy.unwrap();
    assert!(acc >= 0.95, "test accuracy {acc}");
}

#[test]
fn the_gpt_overfits_a_400_byte_text() {
    let dir = tmp_dir("overfit");
    // 360 bytes train; the 40 of the validation split hold a window of 32 + 1
    let text: String = "wgtrain trains neural networks on any GPU through wgpu; ".repeat(8);
    let path = dir.join("tiny.txt");
    std::fs::write(&path, &text.as_bytes()[..400]).unwrap();
    let mut c = TrainConfig::preset(ModelKind::Gpt, path.to_str().unwrap());
    c.gpt.block_size = 32;
    c.batch_size = 8;
    c.steps = 300;
    c.lr = 3e-3;
    c.optimizer.weight_decay = Some(0.0);
    let mut t = Trainer::new(gpu(), c).unwrap();
    let mut last = f32::INFINITY;
    while t.step < t.config.steps {
        let read = t.step + 10 >= t.config.steps;
        if let Some(l) = t.train_step(read).unwrap() {
            last = l;
        }
    }
    assert!(last < 0.1, "training loss {last} after 300 steps");
}

#[test]
fn the_same_config_and_seed_give_the_same_losses_and_weights() {
    let run = || {
        let mut t = Trainer::new(gpu(), tiny_addition(12)).unwrap();
        let losses: Vec<u32> = (0..12)
            .map(|_| t.train_step(true).unwrap().unwrap().to_bits())
            .collect();
        (losses, weights(&t))
    };
    let (l1, w1) = run();
    let (l2, w2) = run();
    assert_eq!(l1, l2, "loss sequences");
    assert!(w1 == w2, "final weights differ");
}

#[test]
fn n_steps_then_resume_then_n_steps_equals_2n_steps_bit_for_bit() {
    let n = 6;
    let dir = tmp_dir("resume");
    let ckpt = dir.join("checkpoint.safetensors");

    let mut whole = Trainer::new(gpu(), tiny_addition(2 * n)).unwrap();
    let whole_losses: Vec<u32> = (0..2 * n)
        .map(|_| whole.train_step(true).unwrap().unwrap().to_bits())
        .collect();

    let mut first = Trainer::new(gpu(), tiny_addition(2 * n)).unwrap();
    let mut losses: Vec<u32> = (0..n)
        .map(|_| first.train_step(true).unwrap().unwrap().to_bits())
        .collect();
    first.save(&ckpt).unwrap();
    drop(first);

    let loaded = Checkpoint::load(&ckpt).unwrap();
    assert_eq!(loaded.meta.step, n);
    let config = TrainConfig::from_json(&loaded.meta.config, "checkpoint").unwrap();
    let mut second = Trainer::new(gpu(), config).unwrap();
    second.resume(&loaded).unwrap();
    losses.extend((0..n).map(|_| second.train_step(true).unwrap().unwrap().to_bits()));

    assert_eq!(losses, whole_losses, "loss sequences");
    assert!(weights(&second) == weights(&whole), "final weights differ");
}

#[test]
fn a_checkpoint_is_a_plain_safetensors_file_with_named_weights() {
    let dir = tmp_dir("safetensors");
    let path = dir.join("c.safetensors");
    let t = Trainer::new(gpu(), tiny_addition(1)).unwrap();
    t.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let wte = st.tensor("wte").unwrap();
    assert_eq!(wte.shape(), &[256, 32]);
    assert_eq!(wte.dtype(), safetensors::Dtype::F32);
    assert!(st.names().iter().any(|n| n.starts_with("optim.m.")));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let info = meta.metadata().as_ref().unwrap();
    assert!(info["config"].contains("\"model\":\"gpt\""));
    // no temporary file is left beside it
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn a_failed_write_leaves_the_good_checkpoint_in_place() {
    let dir = tmp_dir("atomic");
    let path = dir.join("c.safetensors");
    write_atomically(&path, b"good").unwrap();
    // the target's directory vanishes: the write fails before anything replaces the file
    assert!(write_atomically(&dir.join("missing/c.safetensors"), b"broken").is_err());
    // a rename onto a directory fails: the temporary file is cleaned up
    std::fs::create_dir_all(dir.join("d.safetensors")).unwrap();
    assert!(write_atomically(&dir.join("d.safetensors"), b"broken").is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"good");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
}

fn digits_accuracy(c: TrainConfig) -> f32 {
    let mut t = Trainer::new(gpu(), c).unwrap();
    while t.step < t.config.steps {
        t.train_step(false).unwrap();
    }
    t.evaluate().unwrap().accuracy.unwrap()
}

#[test]
fn every_optimizer_reaches_93_percent_on_digits() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/configs/mlp-digits.json");
    let base = TrainConfig::load(&path).unwrap();
    let mut results = vec![];
    for name in wgtrain::optim::OptimizerName::ALL {
        let mut c = base.with_optimizer(name).unwrap();
        c.steps = 800;
        results.push((name, digits_accuracy(c)));
    }
    for (name, acc) in &results {
        assert!(*acc >= 0.93, "{name:?}: {acc} (all: {results:?})");
    }
    // 8-bit Adam ends within one point of f32 Adam
    let acc = |n| results.iter().find(|(m, _)| *m == n).unwrap().1;
    let (a32, a8) = (
        acc(wgtrain::optim::OptimizerName::Adam),
        acc(wgtrain::optim::OptimizerName::Adam8bit),
    );
    assert!((a32 - a8).abs() <= 0.01, "adam {a32} vs adam8bit {a8}");
}

#[test]
fn a_steady_step_allocates_nothing_creates_no_bind_group_and_submits_once() {
    for config in [
        tiny_addition(6),
        TrainConfig::preset(ModelKind::Mlp, "digits"),
    ] {
        let gpu = wgtrain::Gpu::new(None).unwrap();
        let mut t = Trainer::new(&gpu, config).unwrap();
        t.train_step(true).unwrap();
        t.train_step(false).unwrap();
        let allocations = gpu.memory().allocations;
        let bind_groups = gpu.stats().bind_groups;
        for i in 0..4 {
            let before = gpu.stats().submits;
            t.train_step(i % 2 == 0).unwrap();
            let submits = gpu.stats().submits - before;
            assert_eq!(
                submits, 1,
                "step {i}: a whole step is one submit, the loss readback included"
            );
        }
        assert_eq!(
            gpu.memory().allocations,
            allocations,
            "no device buffer created after the first step"
        );
        assert_eq!(
            gpu.stats().bind_groups,
            bind_groups,
            "steady steps reuse their bind groups"
        );
    }
}
