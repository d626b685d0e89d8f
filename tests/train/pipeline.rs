//! Pipeline parallelism against one device: a GPT's blocks split over 2 and 3 stages, the step's
//! micro-batches run under each schedule, equals one device accumulating the same micro-batches.

use wgtrain::gpu::{Category, DeviceOptions, Gpu};
use wgtrain::nn::Recompute;
use wgtrain::parallel::pipeline::{self, PipelineOptions};
use wgtrain::parallel::schedule::Schedule;
use wgtrain::train::{TrainConfig, Trainer};

const SCHEDULES: [Schedule; 3] = [Schedule::Naive, Schedule::Gpipe, Schedule::OneFOneB];

fn gpt(n_layer: usize) -> TrainConfig {
    let mut c = TrainConfig {
        batch_size: 8,
        micro_batch_size: 2,
        steps: 3,
        ..TrainConfig::default()
    };
    c.gpt.n_layer = n_layer;
    c.gpt.n_embd = 32;
    c.addition.test_size = 10;
    c
}

fn options(schedule: Schedule) -> PipelineOptions {
    PipelineOptions {
        schedule,
        partition: pipeline::Partition::Params,
        replicas: 1,
        resume: None,
    }
}

/// Losses and final parameters on one device, the same micro-batches accumulated.
fn one_device(config: &TrainConfig) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let gpu = Gpu::new(None).unwrap();
    let mut t = Trainer::new(&gpu, config.clone()).unwrap();
    let losses = (0..config.steps)
        .map(|_| t.train_step(true).unwrap().unwrap())
        .collect();
    let params = t
        .model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value().to_f32(&gpu).unwrap()))
        .collect();
    (losses, params)
}

#[test]
fn every_schedule_on_2_and_3_stages_equals_one_device_bit_for_bit_without_the_tie() {
    // With the token embedding frozen there is no tied gradient to sum across stages: each
    // stage accumulates its micro-batches' gradients in one device's order, the norm adds the
    // per-tensor squares in parameter order, so every bit agrees.
    use wgtrain::optim::{OptimizerConfig, OptimizerName};
    for (stages, recompute, optimizer) in [
        (2, Recompute::None, OptimizerName::Adamw),
        (3, Recompute::Sqrt, OptimizerName::Adamw),
        (2, Recompute::All, OptimizerName::Lion),
        (3, Recompute::Every(1), OptimizerName::Sgd),
    ] {
        let mut c = gpt(4);
        c.freeze = vec!["wte".into()];
        c.recompute = recompute;
        c.optimizer = OptimizerConfig::named(optimizer);
        let (losses, params) = one_device(&c);
        let gpus = Gpu::open_n(None, stages).unwrap();
        for schedule in SCHEDULES {
            let what = format!("{schedule:?} on {stages} stages, {recompute:?}, {optimizer:?}");
            let r = pipeline::train(&gpus, &c, &options(schedule)).unwrap();
            assert_eq!(r.micro_batches, 4);
            assert_eq!(r.losses, losses, "{what}: losses");
            assert_eq!(r.params, params, "{what}: parameters");
        }
    }
}

#[test]
fn the_tied_embedding_summed_across_the_first_and_last_stage_matches_one_device() {
    let c = gpt(2);
    let (losses, params) = one_device(&c);
    let gpus = Gpu::open_n(None, 2).unwrap();
    let r = pipeline::train(&gpus, &c, &options(Schedule::OneFOneB)).unwrap();
    // one device adds the token embedding's gradient as h0 + e0 + h1 + e1 + …, the pipeline
    // (e0 + e1 + …) + (h0 + h1 + …): the same terms in another order, a few ulps
    close(&r, &losses, &params);
    assert_ne!(r.params, params, "the sums did take another order");
}

#[test]
fn stages_across_the_vulkan_and_gl_adapters_match_one_device_within_gls_rounding() {
    let gpus = Gpu::open_all().unwrap();
    if gpus.len() < 2 {
        eprintln!("skipped: one adapter here");
        return;
    }
    let gpus: Vec<Gpu> = gpus.into_iter().take(2).collect();
    let mut c = gpt(2);
    c.freeze = vec!["wte".into()];
    let (losses, params) = one_device(&c);
    let r = pipeline::train(&gpus, &c, &options(Schedule::Gpipe)).unwrap();
    // GL has no subgroups, so its LayerNorm sums a row's statistics by a workgroup reduction,
    // in another order than the subgroup kernel the Vulkan stage (and the one device) runs:
    // a few ulps per step
    close(&r, &losses, &params);
}

/// Within the rounding of a sum taken in another order: 1e-5 of the loss; parameters within
/// 1e-4 of their largest value or 1e-6 absolute (AdamW divides a gradient by its own running
/// size, so where a gradient is near zero a few ulps of it move the update by a visible
/// fraction of one step's lr, 1e-3: the floor is a thousandth of that).
fn close(r: &pipeline::PipelineReport, losses: &[f32], params: &[(String, Vec<f32>)]) {
    for (a, b) in r.losses.iter().zip(losses) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
    }
    for ((name, a), (_, b)) in r.params.iter().zip(params) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= (1e-4 * scale).max(1e-6), "{name}: {err} vs {scale}");
    }
}

#[test]
fn one_f_one_b_holds_fewer_activations_than_gpipe_and_the_plan_says_so_to_the_byte() {
    let mut c = gpt(4);
    c.batch_size = 16;
    c.steps = 1;
    let gpus = Gpu::open_n(None, 2).unwrap();
    let mut peaks = vec![];
    for schedule in [Schedule::Gpipe, Schedule::OneFOneB] {
        let r = pipeline::train(&gpus, &c, &options(schedule)).unwrap();
        let planned = pipeline::plan_memory(&gpus, &c, &options(schedule)).unwrap();
        for (s, (m, p)) in r.memory.iter().zip(&planned).enumerate() {
            for cat in Category::ALL {
                assert_eq!(
                    m.peak.get(cat),
                    p.peak.get(cat),
                    "{schedule:?} stage {s} {}",
                    cat.name()
                );
            }
        }
        peaks.push(r.memory[0].peak.get(Category::Activations));
    }
    // stage 0 of 2 holds 8 micro-batches' activations under GPipe, at most 2 under 1F1B
    assert!(peaks[1] * 2 < peaks[0], "{peaks:?}");
}

#[test]
fn a_stages_device_error_stops_the_pipeline_with_that_error() {
    let c = gpt(2);
    let normal = Gpu::new(None).unwrap();
    // stage 1's device is too small for a block's MLP weight (128·32 floats = 16 KiB)
    let mut limits = normal.limits().clone();
    limits.max_storage_buffer_binding_size = 8 << 10;
    limits.max_buffer_size = 8 << 10;
    let small = Gpu::new_with(
        None,
        &DeviceOptions {
            limits: Some(limits),
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    let e = pipeline::train(&[normal, small], &c, &options(Schedule::OneFOneB))
        .err()
        .expect("stage 1 cannot build its blocks");
    assert!(
        e.to_string().contains("more than this adapter allows"),
        "{e}"
    );
}

#[test]
fn lora_with_dropout_on_a_pipeline_equals_one_device_bit_for_bit() {
    // the base is frozen (the tie included) and each stage seeds the adapters' dropout masks
    // per step and micro-batch as one device does
    let mut c = gpt(2);
    c.lora = Some(wgtrain::nn::lora::LoraConfig {
        r: 4,
        dropout: 0.2,
        ..Default::default()
    });
    let (losses, params) = one_device(&c);
    let gpus = Gpu::open_n(None, 2).unwrap();
    let r = pipeline::train(&gpus, &c, &options(Schedule::OneFOneB)).unwrap();
    assert_eq!(r.losses, losses);
    assert_eq!(r.params, params);
}

/// `eval_every` and `checkpoint_every` under a pipeline: the stages evaluate (chained) and write
/// their checkpoint parts mid-run, the records equal one device's
/// bit for bit (the tie frozen, as above), and the step-2 checkpoint resumes on one device as
/// the unbroken run continues. (Before the one outer loop, a pipeline ignored both and built
/// the whole model on the first device at the end.)
#[test]
fn a_pipeline_evaluates_and_checkpoints_mid_run_like_one_device() {
    let dir = crate::TmpDir::new("pipeline-fit");
    let mut c = gpt(4);
    c.freeze = vec!["wte".into()];
    c.steps = 4;
    (c.log_every, c.eval_every, c.checkpoint_every) = (1, 2, 2);
    let gpu = Gpu::new(None).unwrap();
    let one = crate::Recorder::new(dir.join("one"));
    let mut single = c.clone();
    single.out = Some(dir.join("one-out").to_str().unwrap().into());
    wgtrain::train::Trainer::new(&gpu, single)
        .unwrap()
        .fit(&mut wgtrain::train::Local, &one)
        .unwrap();
    let expected = one.take();
    assert_eq!(expected.len(), 4 + 2 * 2, "{expected:?}");
    let gpus = Gpu::open_n(None, 2).unwrap();
    let rec = crate::Recorder::new(dir.join("piped"));
    let mut piped = c.clone();
    piped.out = Some(dir.join("piped-out").to_str().unwrap().into());
    let r = pipeline::train_observed(&gpus, &piped, &options(Schedule::OneFOneB), &rec).unwrap();
    assert_eq!(rec.take(), expected, "the pipeline's records");
    // the final checkpoint and the report hold the whole model (gathered from both stages)
    let whole = wgtrain::train::checkpoint::Checkpoint::load(
        &dir.join("piped-out").join(wgtrain::train::CHECKPOINT_FILE),
    )
    .unwrap();
    let mut resumed = c.clone();
    resumed.checkpoint_every = 0;
    let mut t = Trainer::new(&gpu, resumed).unwrap();
    assert_eq!(r.params.len(), t.model.params().len());
    for (name, v) in &r.params {
        let stored = whole.read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(
            bytes, stored,
            "{name}: the checkpoint holds the final values"
        );
    }
    t.resume(
        &wgtrain::train::checkpoint::Checkpoint::load(&dir.join("piped").join("at2.safetensors"))
            .unwrap(),
    )
    .unwrap();
    let again = crate::Recorder::new(dir.join("again"));
    t.fit(&mut wgtrain::train::Local, &again).unwrap();
    let unbroken: Vec<String> = expected[4..]
        .iter()
        .filter(|l| !l.starts_with("checkpoint"))
        .cloned()
        .collect();
    assert_eq!(again.take(), unbroken, "resumed on one device");
}

/// Mixed precision through a pipeline: bf16 and fp16 (the loss scaler on every stage, deciding
/// alike from the summed loss and norm) on 2 stages equal one device accumulating the same
/// micro-batches bit for bit (the tie frozen, as above): the links carry the half activations
/// and their gradients as they are, the stages' gradients are f32 (as one device's are over
/// several micro-batches), and the evaluation's gathered values get their working copies.
#[test]
fn mixed_precision_on_a_pipeline_equals_one_device_bit_for_bit() {
    use wgtrain::train::config::Precision;
    let gpus = Gpu::open_n(None, 2).unwrap();
    let f16 = gpus[0].features().contains(wgpu::Features::SHADER_F16);
    let mut c = gpt(4);
    c.freeze = vec!["wte".into()];
    let fp32 = pipeline::train(&gpus, &c, &options(Schedule::OneFOneB)).unwrap();
    for precision in [Precision::Bf16, Precision::Fp16] {
        if precision == Precision::Fp16 && !f16 {
            continue;
        }
        c.precision = precision;
        let (losses, params) = one_device(&c);
        let gpu = Gpu::new(None).unwrap();
        let eval = Trainer::new(&gpu, c.clone())
            .and_then(|mut t| {
                for _ in 0..c.steps {
                    t.train_step(false)?;
                }
                t.evaluate()
            })
            .unwrap();
        let r = pipeline::train(&gpus, &c, &options(Schedule::OneFOneB)).unwrap();
        assert_eq!(r.losses, losses, "{precision:?}: losses");
        assert_eq!(r.params, params, "{precision:?}: parameters");
        assert_eq!(
            r.eval.loss.to_bits(),
            eval.loss.to_bits(),
            "{precision:?}: eval"
        );
        // half activations and gradients on the links: half the bytes fp32 moves
        assert_eq!(
            r.link_bytes.iter().map(|b| 2 * b).collect::<Vec<_>>(),
            fp32.link_bytes,
            "{precision:?}: link bytes"
        );
    }
}

#[test]
fn an_overflow_in_any_stage_skips_that_step_in_every_stage_as_one_device_does() {
    // fp16 with a loss scale far far too large for the first steps' gradients (halved at each overflow until they fit, then stepping) (halved at each overflow until they fit, then stepping): each stage's found-inf is
    // its part of the global norm, summed over the stages before the guard reads it, so every
    // stage skips that step (and halves the scale) as one device does
    use wgtrain::train::config::Precision;
    let gpus = Gpu::open_n(None, 2).unwrap();
    if !gpus[0].features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("(skipped: the adapter has no SHADER_F16)");
        return;
    }
    let mut c = gpt(4);
    c.freeze = vec!["wte".into()];
    c.precision = Precision::Fp16;
    c.initial_loss_scale = 2f32.powi(30);
    c.steps = 14;
    let mut t = Trainer::new(&gpus[0], c.clone()).unwrap();
    for _ in 0..c.steps {
        t.train_step(false).unwrap();
    }
    let s = t.step_state().unwrap();
    eprintln!("one device: {s:?}");
    assert!(s.overflows >= 1 && s.steps_taken >= 1, "{s:?}");
    let (losses, params) = one_device(&c);
    let r = pipeline::train(&gpus, &c, &options(Schedule::OneFOneB)).unwrap();
    assert_eq!(r.losses, losses, "losses");
    assert_eq!(r.params, params, "parameters");
}
