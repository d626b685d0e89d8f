//! The planner against the pool: the planner runs the real training step on a ledger twin of the
//! device, so its predicted peaks equal the pool's measurement of a real run to the byte, per
//! category and in total, for the shipped configs (shortened) and their micro-batch and
//! recompute variants, with the matmul tuning cache cold (an autotune in the measured run) and
//! warm; and the pool holds less than 15 % beyond what the peak needs (fragmentation).

use std::path::Path;
use wgtrain::gpu::Category;
use wgtrain::memory::plan;
use wgtrain::nn::Recompute;
use wgtrain::optim::{OptimizerConfig, OptimizerName};
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
/// Also returns where the device's matmul tuning came from.
fn measure(c: &TrainConfig) -> (wgtrain::gpu::MemoryStats, &'static str) {
    let gpu = Gpu::new(None).unwrap();
    let mut t = Trainer::new(&gpu, c.clone()).unwrap();
    t.train_step(true).unwrap();
    t.train_step(true).unwrap();
    t.evaluate().unwrap();
    (gpu.memory(), wgtrain::ops::matmul_tune::tuning(&gpu).source)
}

/// The plan against a measured run with a cold tuning cache (an empty cache directory: the
/// measured device autotunes before its model is built) and one with the warm cache.
fn check(what: &str, c: &TrainConfig) {
    // The cache directory is a process-wide variable, and the other tests run meanwhile: one
    // that opens a device while it points here writes its tuning into the "cold" directory.
    // Then this attempt ran warm (its figures still checked); a fresh directory tries again.
    let mut tuned = false;
    for attempt in 0..5 {
        let cold = crate::TmpDir::new(&format!("plan-cold-{}-{attempt}", what.replace(' ', "-")));
        std::env::set_var("WGTRAIN_CACHE_DIR", &*cold);
        let source = check_once(&format!("{what} (cold tuning cache)"), c);
        std::env::remove_var("WGTRAIN_CACHE_DIR");
        if source != "cached" {
            tuned = true;
            break;
        }
    }
    assert!(tuned, "{what}: no cold run tuned in five attempts");
    check_once(what, c);
}

fn check_once(what: &str, c: &TrainConfig) -> &'static str {
    let p = plan(&Gpu::new(None).unwrap(), c).unwrap();
    let (m, source) = measure(c);
    for cat in Category::ALL {
        assert_eq!(
            p.predicted.get(cat),
            m.peak.get(cat),
            "{what}: {}: predicted vs measured",
            cat.name()
        );
    }
    assert_eq!(p.total, m.peak_total, "{what}: total");
    // of the most the pool held, the share no tensor needed at the peak
    assert!(
        m.fragmentation() < 0.15,
        "{what}: fragmentation {:.1} % (peak {} of {} held)",
        100.0 * m.fragmentation(),
        m.peak_total,
        m.peak_held
    );
    source
}

#[test]
fn predictions_equal_measurements_on_the_shipped_configs() {
    let dir = crate::TmpDir::new("plan");
    let mut mlp = shipped("mlp-digits.json");
    mlp.steps = 2;
    check("mlp-digits", &mlp);
    mlp.micro_batch_size = 16;
    check("mlp-digits micro 16", &mlp);
    mlp.optimizer = OptimizerConfig::named(OptimizerName::Adam8bit);
    check("mlp-digits adam8bit", &mlp);

    let mut add = shipped("gpt-addition.json");
    add.steps = 2;
    add.addition.test_size = 64;
    check("gpt-addition", &add);

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
        deep.recompute = policy;
        check(&format!("gpt-deep {}", policy.name()), &deep);
    }
    deep.recompute = Recompute::Sqrt;
    deep.micro_batch_size = 2;
    check("gpt-deep sqrt micro 2", &deep);
}

#[test]
fn model_states_follow_the_formula() {
    // measured by the ledger pool, not computed from the formula: params, grads and AdamW's
    // two moments are 4, 4 and 8 bytes per parameter
    let c = TrainConfig::default();
    let p = plan(crate::gpu(), &c).unwrap();
    let (fp, fg, fo) = p.formula();
    assert_eq!(p.predicted.get(Category::Params), fp);
    assert_eq!(p.predicted.get(Category::Grads), fg);
    assert_eq!(p.predicted.get(Category::OptimizerState), fo);
    assert_eq!(fo, 8 * p.psi, "AdamW: 8 bytes per parameter");
}

#[test]
fn recomputation_and_micro_batches_shrink_the_activation_peak() {
    let mut c = TrainConfig::default();
    c.gpt.n_layer = 9;
    let act = |c: &TrainConfig| {
        plan(crate::gpu(), c)
            .unwrap()
            .predicted
            .get(Category::Activations)
    };
    let none = act(&c);
    c.recompute = Recompute::Sqrt;
    let sqrt = act(&c);
    c.recompute = Recompute::All;
    let all = act(&c);
    assert!(all < sqrt && sqrt < none, "{all} < {sqrt} < {none}");
    c.recompute = Recompute::None;
    c.micro_batch_size = 8;
    assert!(act(&c) < none);
}
