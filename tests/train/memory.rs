//! Gradient accumulation and activation checkpointing: both change what runs at once, never the
//! gradients.

use crate::gpu;
use wgtrain::nn::gpt::TokenBatch;
use wgtrain::nn::{zero_grads, Build, Gpt, GptConfig, LossGrad, NoHooks, Recompute};
use wgtrain::optim::{OptimizerConfig, OptimizerName};
use wgtrain::rng::Rng;
use wgtrain::train::{ModelKind, TrainConfig, Trainer};

fn grads_and_weights(t: &Trainer) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let params = t.model.params();
    (
        params
            .iter()
            .map(|p| p.grad().to_f32(gpu()).unwrap())
            .collect(),
        params
            .iter()
            .map(|p| p.value().to_f32(gpu()).unwrap())
            .collect(),
    )
}

/// max |a − b| ≤ tol · max |b| per tensor.
fn assert_rel_close(what: &str, a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = y.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        let err = x
            .iter()
            .zip(y)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            err <= tol * scale,
            "{what}: tensor {i}: max error {err} vs max magnitude {scale}"
        );
    }
}

fn one_step(mut c: TrainConfig, micro: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    c.micro_batch_size = micro;
    c.optimizer = OptimizerConfig::named(OptimizerName::Sgd);
    c.grad_clip = 0.0;
    let mut t = Trainer::new(gpu(), c).unwrap();
    t.train_step(true).unwrap();
    grads_and_weights(&t)
}

#[test]
fn four_micro_batches_of_8_update_like_one_batch_of_32() {
    let mut mlp = TrainConfig::preset(ModelKind::Mlp, "digits");
    mlp.batch_size = 32;
    let mut gpt = TrainConfig {
        batch_size: 32,
        ..TrainConfig::default()
    };
    gpt.gpt.n_layer = 1;
    for (what, c) in [("mlp", mlp), ("gpt", gpt)] {
        let (g32, w32) = one_step(c.clone(), 0);
        let (g8, w8) = one_step(c, 8);
        assert_rel_close(&format!("{what} gradients"), &g8, &g32, 1e-5);
        assert_rel_close(&format!("{what} weights"), &w8, &w32, 1e-5);
    }
}

#[test]
fn every_checkpoint_policy_gives_bit_identical_gradients_and_the_stated_recompute_count() {
    let cfg = GptConfig {
        vocab_size: 32,
        block_size: 8,
        n_layer: 5,
        n_head: 2,
        n_embd: 16,
        ..Default::default()
    };
    let mut rng = Rng::new(9);
    let tokens: Vec<u32> = (0..3 * 8).map(|_| rng.below(32) as u32).collect();
    let targets: Vec<u32> = (0..3 * 8).map(|_| rng.below(32) as u32).collect();
    let run = |policy: Recompute| {
        let mut model = Gpt::new(&Build::new(gpu()), cfg.clone(), &mut Rng::new(1)).unwrap();
        model.recompute = policy;
        let batch = TokenBatch::new(gpu(), &cfg, &tokens, &targets, 3, 8).unwrap();
        zero_grads(gpu(), &model.params());
        let losses = model
            .forward_backward(gpu(), &batch, LossGrad::plain(0.1), &mut NoHooks)
            .unwrap()
            .to_f32(gpu())
            .unwrap();
        let grads: Vec<Vec<u32>> = model
            .params()
            .iter()
            .map(|p| {
                p.grad()
                    .to_f32(gpu())
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect();
        let forwards = model
            .block_forwards
            .load(std::sync::atomic::Ordering::Relaxed);
        (losses, grads, forwards)
    };
    let (loss0, grads0, f0) = run(Recompute::None);
    assert_eq!(f0, 5);
    // n = 5: all → 5 + 5·4/2; every:2 → segments [0,2) [2,4) [4,5), the last kept: 5 + 4;
    // sqrt → K = 3: [0,3) [3,5), the last kept: 5 + 3; every:5 → one segment, kept: 5.
    for (policy, forwards) in [
        (Recompute::All, 15),
        (Recompute::Every(2), 9),
        (Recompute::Sqrt, 8),
        (Recompute::Every(5), 5),
        (Recompute::Every(1), 9),
    ] {
        let (loss, grads, f) = run(policy);
        assert_eq!(f as usize, forwards, "{policy:?}");
        assert_eq!(f as usize, policy.block_forwards(5), "{policy:?} formula");
        assert_eq!(loss, loss0, "{policy:?} losses");
        assert!(
            grads == grads0,
            "{policy:?}: gradients differ from vanilla backprop"
        );
    }
}
