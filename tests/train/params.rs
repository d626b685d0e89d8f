//! Trainable and frozen parameters, restores by name (whole, subset, across optimizers), and
//! checkpoints of every dtype.

use wgtrain::gpu::Category;
use wgtrain::optim::{OptimizerConfig, OptimizerName};
use wgtrain::train::checkpoint::{self, Checkpoint, CheckpointMeta};
use wgtrain::train::{TrainConfig, Trainer};
use wgtrain::{DType, Gpu, Tensor};

fn tiny_addition() -> TrainConfig {
    let mut c = TrainConfig {
        steps: 2,
        batch_size: 8,
        ..TrainConfig::default()
    };
    c.gpt.n_layer = 2;
    c.gpt.n_embd = 32;
    c.addition.test_size = 20;
    c
}

fn values(t: &Trainer, gpu: &Gpu) -> Vec<(String, Vec<f32>)> {
    t.model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value().to_f32(gpu).unwrap()))
        .collect()
}

#[test]
fn frozen_parameters_have_no_gradient_no_optimizer_state_and_do_not_move() {
    let mut c = tiny_addition();
    c.freeze = vec!["wte".into(), "wpe".into(), "h.0.*".into()];
    let gpu = Gpu::new(None).unwrap();
    let mut t = Trainer::new(&gpu, c).unwrap();
    let all: u64 = t.model.params().iter().map(|p| p.numel() as u64).sum();
    let trainable: u64 = t
        .model
        .trainable_params()
        .iter()
        .map(|p| p.numel() as u64)
        .sum();
    assert!(trainable < all / 2, "{trainable} of {all} train");
    for p in t.model.params() {
        let frozen = p.name == "wte" || p.name == "wpe" || p.name.starts_with("h.0.");
        assert_eq!(p.trainable(), !frozen, "{}", p.name);
        assert_eq!(t.optimizer.slots(&p.name).is_some(), !frozen, "{}", p.name);
    }
    // the pool's counters: gradients and AdamW's two moments for the trainable ones only
    let live = gpu.memory().live;
    assert_eq!(live.get(Category::Params), 4 * all);
    assert_eq!(live.get(Category::Grads), 4 * trainable);
    assert_eq!(live.get(Category::OptimizerState), 8 * trainable);
    let before = values(&t, &gpu);
    t.train_step(true).unwrap();
    t.train_step(true).unwrap();
    assert_eq!(gpu.memory().peak.get(Category::Grads), 4 * trainable);
    for ((name, b), (_, a)) in before.iter().zip(values(&t, &gpu)) {
        let frozen = name == "wte" || name == "wpe" || name.starts_with("h.0.");
        if frozen {
            assert_eq!(*b, a, "{name} is frozen");
        } else if !name.ends_with("bias") {
            assert_ne!(*b, a, "{name} trains");
        }
    }
    // the planner sees the same
    let p = wgtrain::memory::plan(&gpu, &t.config).unwrap();
    assert_eq!(p.predicted.get(Category::Grads), 4 * trainable);
    assert_eq!(p.psi_trainable, trainable);
}

#[test]
fn a_freeze_pattern_that_matches_nothing_is_an_error() {
    let mut c = tiny_addition();
    c.freeze = vec!["h.9.*".into()];
    let gpu = Gpu::new(None).unwrap();
    let e = Trainer::new(&gpu, c).err().expect("an error");
    assert!(e.to_string().contains("\"h.9.*\""), "{e}");
}

#[test]
fn a_subset_restore_loads_a_base_model_and_reports_the_fresh_parameters() {
    let dir = crate::TmpDir::new("subset");
    let path = dir.join("base.safetensors");
    let gpu = Gpu::new(None).unwrap();
    let mut small = tiny_addition();
    small.gpt.n_layer = 1;
    let mut base = Trainer::new(&gpu, small).unwrap();
    base.train_step(false).unwrap();
    base.save(&path).unwrap();
    let base_values = values(&base, &gpu);

    // a deeper model: h.1.* is new
    let mut deeper = Trainer::new(&gpu, tiny_addition()).unwrap();
    let init = values(&deeper, &gpu);
    let ckpt = Checkpoint::load(&path).unwrap();
    let report = deeper.restore_subset(&ckpt).unwrap();
    let fresh: Vec<&str> = report.fresh.iter().map(String::as_str).collect();
    assert!(
        !fresh.is_empty() && fresh.iter().all(|n| n.starts_with("h.1.")),
        "{fresh:?}"
    );
    assert_eq!(fresh.len(), 12, "every tensor of block 1");
    assert!(
        report.unused.iter().all(|n| n.starts_with("optim.")),
        "{report:?}"
    );
    assert!(!report.describe().is_empty());
    let now = values(&deeper, &gpu);
    for (name, v) in &now {
        match base_values.iter().find(|(n, _)| n == name) {
            Some((_, b)) => assert_eq!(v, b, "{name} comes from the base"),
            None => {
                let (_, i) = init.iter().find(|(n, _)| n == name).unwrap();
                assert_eq!(v, i, "{name} keeps its fresh init");
            }
        }
    }
    // a whole restore of the same checkpoint refuses: the model has tensors it lacks
    let e = ckpt
        .restore(&gpu, &deeper.model.params(), None, false)
        .expect_err("a missing tensor is an error");
    assert!(e.to_string().contains("h.1."), "{e}");
}

#[test]
fn resuming_with_another_optimizer_says_which_state_it_drops() {
    let dir = crate::TmpDir::new("other-optim");
    let path = dir.join("c.safetensors");
    let gpu = Gpu::new(None).unwrap();
    let mut a = Trainer::new(&gpu, tiny_addition()).unwrap();
    a.train_step(false).unwrap();
    a.save(&path).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();

    let mut c = tiny_addition();
    c.optimizer = OptimizerConfig::named(OptimizerName::Momentum);
    let mut b = Trainer::new(&gpu, c).unwrap();
    let report = b.resume(&ckpt).unwrap();
    let n = a.model.params().len();
    assert_eq!(report.unused.len(), 2 * n, "AdamW's m and v: {report:?}");
    assert!(report
        .unused
        .iter()
        .all(|k| k.starts_with("optim.m.") || k.starts_with("optim.v.")));
    assert!(report.describe().iter().any(|l| l.contains("dropped")));
    assert_eq!(b.step, 1, "the step continues");
    assert_eq!(b.optimizer.t, 0, "the new optimizer starts fresh");
    assert_eq!(
        values(&a, &gpu),
        values(&b, &gpu),
        "the weights are restored"
    );

    // the same optimizer takes everything
    let mut same = Trainer::new(&gpu, tiny_addition()).unwrap();
    let report = same.resume(&ckpt).unwrap();
    assert!(report.unused.is_empty(), "{report:?}");
    assert_eq!(same.optimizer.t, 1);
}

#[test]
fn a_checkpoint_saves_and_loads_every_dtype() {
    let dir = crate::TmpDir::new("dtypes");
    let path = dir.join("all.safetensors");
    let gpu = Gpu::new(None).unwrap();
    let ws = Category::Workspace;
    let bytes = |dtype: DType, n: usize| -> Vec<u8> {
        (0..dtype.bytes_for(n))
            .map(|i| (i * 37 + 11) as u8)
            .collect()
    };
    let mut slots = vec![];
    for dtype in DType::ALL {
        let n = 7; // odd: the packed types end in a partial word
        let t = Tensor::empty(&gpu, dtype.name(), &[n], dtype, ws).unwrap();
        gpu.upload(&t, &bytes(dtype, n));
        slots.push((dtype.name(), t));
    }
    let state = vec![("x".to_string(), slots)];
    let meta = CheckpointMeta {
        step: 3,
        optimizer_t: 3,
        optimizer_gamma: 1.0,
        rng: [1, 2, 3, 4],
        config: serde_json::to_string(&TrainConfig::default()).unwrap(),
        run: "test".into(),
        step_state: None,
    };
    checkpoint::save(&gpu, &path, &[], &state, &meta).unwrap();
    let ckpt = Checkpoint::load(&path).unwrap();
    for dtype in DType::ALL {
        let name = format!("optim.{}.x", dtype.name());
        assert_eq!(ckpt.info(&name), Some((dtype, &[7usize][..])));
        assert_eq!(
            ckpt.read(&name).unwrap(),
            bytes(dtype, 7),
            "{}",
            dtype.name()
        );
    }
}

#[test]
fn a_target_past_the_vocabulary_is_an_error_naming_its_position() {
    let gpu = Gpu::new(None).unwrap();
    let cfg = wgtrain::nn::GptConfig {
        vocab_size: 16,
        block_size: 4,
        n_layer: 1,
        n_head: 1,
        n_embd: 8,
        ..Default::default()
    };
    let tokens = [1, 2, 3, 4];
    let targets = [2, 3, wgtrain::ops::softmax_xent::PAD, 16];
    match wgtrain::nn::gpt::TokenBatch::new(&gpu, &cfg, &tokens, &targets, 1, 4) {
        Err(wgtrain::Error::IndexOutOfRange {
            name,
            position,
            index,
            size,
        }) => assert_eq!(
            (name.as_str(), position, index, size),
            ("targets", 3, 16, 16)
        ),
        other => panic!("expected IndexOutOfRange, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_validation_split_shorter_than_a_block_is_refused_never_replaced_by_training_text() {
    let dir = crate::TmpDir::new("short-val");
    let text = dir.join("t.txt");
    // 90 % of 60 bytes trains; the 6 validation bytes are shorter than a block of 16
    std::fs::write(&text, "abcdefghij".repeat(6)).unwrap();
    let mut c = TrainConfig {
        data: text.to_str().unwrap().into(),
        batch_size: 2,
        ..TrainConfig::default()
    };
    c.gpt.n_layer = 1;
    c.gpt.n_embd = 16;
    c.gpt.block_size = 16;
    let gpu = Gpu::new(None).unwrap();
    let e = Trainer::new(&gpu, c).err().expect("refused").to_string();
    assert!(
        e.contains("validation split") && e.contains("block_size"),
        "{e}"
    );
}

#[test]
fn freezing_the_embeddings_skips_the_first_blocks_input_gradient_and_changes_no_other() {
    let gpu = Gpu::new(None).unwrap();
    let full = tiny_addition();
    let mut frozen = full.clone();
    frozen.freeze = vec!["wte".into(), "wpe".into()];
    let mut a = Trainer::new(&gpu, full).unwrap();
    let mut b = Trainer::new(&gpu, frozen).unwrap();
    let batch = a.draw_batch();
    a.forward_backward(&batch).unwrap();
    b.forward_backward(&batch).unwrap();
    let dispatches = |t: &mut Trainer| {
        let before = gpu.stats().dispatches;
        t.forward_backward(&batch).unwrap();
        gpu.stats().dispatches - before
    };
    assert!(
        dispatches(&mut b) < dispatches(&mut a),
        "less work with the embeddings frozen"
    );
    for p in b.model.trainable_params() {
        let q = a
            .model
            .params()
            .into_iter()
            .find(|q| q.name == p.name)
            .unwrap();
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(p.grad().to_f32(&gpu).unwrap()),
            bits(q.grad().to_f32(&gpu).unwrap()),
            "{}",
            p.name
        );
    }
}
