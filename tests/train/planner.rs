//! The planner against the pool: predicted and measured peaks agree within 10 % per category and
//! in total, for the shipped configs (shortened) and their micro-batch and checkpoint variants.

use std::path::Path;
use wgtrain::gpu::Category;
use wgtrain::memory::plan;
use wgtrain::nn::Recompute;
use wgtrain::train::{TrainConfig, Trainer};
use wgtrain::Gpu;

fn shipped(name: &str) -> TrainConfig {
    TrainConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/configs")
            .join(name),
    )
    .unwrap()
}

/// Two training steps and an evaluation, as `wgtrain train` runs them, on a fresh device.
fn measure(c: &TrainConfig) -> wgtrain::gpu::MemoryStats {
    let gpu = Gpu::new(None).unwrap();
    let mut t = Trainer::new(&gpu, c.clone()).unwrap();
    t.train_step(true).unwrap();
    t.train_step(true).unwrap();
    t.evaluate().unwrap();
    gpu.memory()
}

fn check(what: &str, c: &TrainConfig) {
    let p = plan(c).unwrap();
    let m = measure(c);
    let within = |pred: u64, got: u64| (pred as f64 - got as f64).abs() <= 0.10 * got as f64;
    for cat in Category::ALL {
        let (pred, got) = (p.predicted.get(cat), m.peak.get(cat));
        assert!(
            within(pred, got),
            "{what}: {}: predicted {pred}, measured {got}",
            cat.name()
        );
    }
    assert!(
        within(p.total, m.peak_total),
        "{what}: total: predicted {}, measured {}",
        p.total,
        m.peak_total
    );
}

#[test]
fn predictions_match_measurements_on_the_shipped_configs() {
    let mut mlp = shipped("mlp-digits.json");
    mlp.steps = 2;
    check("mlp-digits", &mlp);
    mlp.micro_batch_size = 16;
    check("mlp-digits micro 16", &mlp);
    mlp.optimizer = wgtrain::optim::OptimizerConfig::named(wgtrain::optim::OptimizerName::Adam8bit);
    check("mlp-digits adam8bit", &mlp);

    let mut add = shipped("gpt-addition.json");
    add.steps = 2;
    add.addition.test_size = 64;
    check("gpt-addition", &add);

    let dir = crate::TmpDir::new("plan");
    let text = dir.join("text.txt");
    std::fs::write(
        &text,
        "a small text to train a byte-level model on. ".repeat(40),
    )
    .unwrap();
    let mut gpt_text = shipped("gpt-text.json");
    gpt_text.data = text.to_str().unwrap().into();
    gpt_text.steps = 2;
    check("gpt-text", &gpt_text);

    let mut deep = shipped("gpt-deep.json");
    deep.data = text.to_str().unwrap().into();
    deep.steps = 2;
    deep.batch_size = 4;
    for policy in [
        Recompute::None,
        Recompute::All,
        Recompute::Every(3),
        Recompute::Sqrt,
    ] {
        deep.checkpoint = policy;
        check(&format!("gpt-deep {}", policy.name()), &deep);
    }
    deep.checkpoint = Recompute::Sqrt;
    deep.micro_batch_size = 2;
    check("gpt-deep sqrt micro 2", &deep);
}
