//! Data parallel (DDP) against one device, the pattern PyTorch and DeepSpeed test with: a seeded
//! model trained 5 steps on N ranks equals the same model on one device running the same global
//! batch as N micro-batches.

use crate::Recorder;
use wgtrain::gpu::{DeviceOptions, Gpu};
use wgtrain::parallel::ddp::{self, DdpOptions, Mode};
use wgtrain::parallel::{Collective, InProcess};
use wgtrain::train::config::Precision;
use wgtrain::train::{Local, ModelKind, TrainConfig, Trainer, CHECKPOINT_FILE};

fn comms(n: usize) -> Vec<Box<dyn Collective>> {
    InProcess::group(n)
        .into_iter()
        .map(|c| Box::new(c) as Box<dyn Collective>)
        .collect()
}

/// Losses and final parameters of `config` on one device, the global batch as `n` micro-batches.
fn one_device(config: &TrainConfig, n: usize) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let gpu = Gpu::new(None).unwrap();
    let mut c = config.clone();
    c.micro_batch_size = config.batch_size / n;
    let mut t = Trainer::new(&gpu, c).unwrap();
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

/// `config` on 2 ranks under DDP, ZeRO 1-3 and the parameter server: one device's losses and
/// parameters, bit for bit.
fn every_mode_equals_one_device(gpus: &[Gpu], config: &TrainConfig) {
    let (losses, params) = one_device(config, 2);
    for (mode, zero) in [
        (Mode::Ddp, 0),
        (Mode::Dp, 0),
        (Mode::Ddp, 1),
        (Mode::Ddp, 2),
        (Mode::Ddp, 3),
    ] {
        let options = DdpOptions {
            mode,
            zero,
            ..DdpOptions::default()
        };
        let r = ddp::train(gpus, comms(2), config, &options).unwrap();
        assert_eq!(r.losses, losses, "{mode:?}, ZeRO {zero}: losses");
        assert_eq!(r.params, params, "{mode:?}, ZeRO {zero}: parameters");
    }
}

fn mlp() -> TrainConfig {
    let mut c = TrainConfig::preset(ModelKind::Mlp, "digits");
    c.batch_size = 48;
    c.steps = 5;
    c
}

#[test]
fn ddp_on_2_and_3_ranks_equals_one_device_bit_for_bit() {
    let c = mlp();
    for n in [2, 3] {
        let gpus = Gpu::open_n(None, n).unwrap();
        for (what, options) in [
            ("default buckets", DdpOptions::default()),
            // every tensor its own bucket
            (
                "tiny buckets",
                DdpOptions {
                    first_bucket_bytes: 1,
                    bucket_bytes: 1,
                    ..DdpOptions::default()
                },
            ),
        ] {
            let r = ddp::train(&gpus, comms(n), &c, &options).unwrap();
            let (losses, params) = one_device(&c, n);
            assert_eq!(r.losses, losses, "{n} ranks, {what}: losses");
            assert_eq!(r.params, params, "{n} ranks, {what}: parameters");
            if what == "tiny buckets" {
                assert_eq!(r.buckets, params.len(), "one bucket per tensor");
            } else {
                assert_eq!(r.buckets, 1, "the MLP's gradients fit the first bucket");
            }
            // each step all-reduces every gradient once: a ring moves 2·(n−1)/n of it each way
            // per rank (plus the loss and the start's broadcast)
            let grads: u64 = params.iter().map(|(_, v)| 4 * v.len() as u64).sum();
            let per_step = 2 * 2 * (n as u64 - 1) * grads / n as u64;
            for bytes in &r.comm_bytes {
                assert!(
                    *bytes >= c.steps * per_step,
                    "{bytes} < {}",
                    c.steps * per_step
                );
                assert!(
                    *bytes < c.steps * per_step + 2 * n as u64 * grads + 4096,
                    "{bytes}"
                );
            }
        }
    }
}

#[test]
fn ddp_across_the_vulkan_and_gl_adapters_equals_one_device() {
    let gpus = Gpu::open_all().unwrap();
    if gpus.len() < 2 {
        eprintln!("skipped: one adapter here");
        return;
    }
    let gpus: Vec<Gpu> = gpus.into_iter().take(2).collect();
    assert_ne!(gpus[0].info().backend, gpus[1].info().backend);
    every_mode_equals_one_device(&gpus, &mlp());
}

#[test]
fn ddp_of_a_gpt_matches_one_device_within_rounding_of_the_tied_embedding() {
    let mut c = TrainConfig {
        batch_size: 8,
        steps: 5,
        ..TrainConfig::default()
    };
    c.gpt.n_layer = 1;
    c.gpt.n_embd = 32;
    c.addition.test_size = 10;
    let gpus = Gpu::open_n(None, 2).unwrap();
    let (losses, params) = one_device(&c, 2);
    for zero in [0, 2, 3] {
        let options = DdpOptions {
            zero,
            // ZeRO 2: the tied embedding is lent at the head and reduced after the embeddings
            first_bucket_bytes: 1,
            bucket_bytes: 1,
            ..DdpOptions::default()
        };
        let r = ddp::train(&gpus, comms(2), &c, &options).unwrap();
        close_to_one_device(&r, &losses, &params);
    }
}

fn close_to_one_device(r: &ddp::DdpReport, losses: &[f32], params: &[(String, Vec<f32>)]) {
    // The token embedding is also the LM head, so each micro-batch writes its gradient twice
    // (head, then embedding): one device adds e1 + (h1 + (e0 + h0)), DDP (e0 + h0) + (e1 + h1).
    // The same terms in another order: a few f32 ulps, which the updates carry forward.
    for (a, b) in r.losses.iter().zip(losses) {
        assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
    }
    for ((name, a), (_, b)) in r.params.iter().zip(params) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(err <= 1e-4 * scale, "{name}: {err} vs {scale}");
    }
}

#[test]
fn a_batch_that_does_not_split_evenly_is_refused() {
    let mut c = mlp();
    c.batch_size = 50;
    let gpus = Gpu::open_n(None, 3).unwrap();
    let e = ddp::train(&gpus, comms(3), &c, &DdpOptions::default())
        .err()
        .expect("50 rows over 3 ranks");
    assert!(
        e.to_string().contains("does not split evenly over 3 ranks"),
        "{e}"
    );
}

#[test]
fn one_ranks_device_error_stops_every_rank_with_that_error() {
    let c = mlp();
    let normal = Gpu::new(None).unwrap();
    // rank 1's device is too small for the model's first layer (64·128 floats = 32 KiB)
    let mut limits = normal.limits().clone();
    limits.max_storage_buffer_binding_size = 16 << 10;
    limits.max_buffer_size = 16 << 10;
    let small = Gpu::new_with(
        None,
        &DeviceOptions {
            limits: Some(limits),
            ..DeviceOptions::default()
        },
    )
    .unwrap();
    let gpus = vec![normal, small];
    let e = ddp::train(&gpus, comms(2), &c, &DdpOptions::default())
        .err()
        .expect("rank 1 cannot build the model");
    let msg = e.to_string();
    assert!(
        msg.contains("more than this adapter allows"),
        "rank 1's own error: {msg}"
    );
}

#[test]
fn zero_1_2_and_3_shard_the_model_states_and_equal_one_device_bit_for_bit() {
    use wgtrain::gpu::Category;
    let c = mlp();
    for n in [2, 3] {
        let gpus = Gpu::open_n(None, n).unwrap();
        let (losses, params) = one_device(&c, n);
        let psi: u64 = params.iter().map(|(_, v)| v.len() as u64).sum();
        let ddp = ddp::train(&gpus, comms(n), &c, &DdpOptions::default()).unwrap();
        for (zero, tiny) in [(1, false), (2, false), (2, true), (3, false), (3, true)] {
            let options = DdpOptions {
                zero,
                // every tensor its own bucket: stage 2 reduces them one by one in the backward
                first_bucket_bytes: if tiny { 1 } else { 1 << 20 },
                bucket_bytes: if tiny { 1 } else { 25 << 20 },
                ..DdpOptions::default()
            };
            let what = format!("ZeRO {zero} on {n} ranks, tiny buckets {tiny}");
            let r = ddp::train(&gpus, comms(n), &c, &options).unwrap();
            assert_eq!(r.losses, losses, "{what}: losses");
            assert_eq!(r.params, params, "{what}: parameters");
            // the shards add up to the whole state (AdamW: 8 bytes per parameter), none holds
            // it all; from stage 2 the gradients too (4 bytes), and the rest of a rank's
            // gradients are only lent (workspace) while its backward writes them; from stage 3
            // the parameters too, the others' gathered (workspace) while a layer runs
            let peaks = |cat| -> Vec<u64> { r.memory.iter().map(|m| m.peak.get(cat)).collect() };
            let state = peaks(Category::OptimizerState);
            let (grads, values) = (peaks(Category::Grads), peaks(Category::Params));
            assert_eq!(state.iter().sum::<u64>(), 8 * psi, "{what}: {state:?}");
            assert!(state.iter().all(|&s| s < 8 * psi), "{what}: {state:?}");
            for ((s, g), v) in state.iter().zip(&grads).zip(&values) {
                let want = if zero >= 2 { s / 2 } else { 4 * psi };
                assert_eq!(*g, want, "{what}: the gradients each rank keeps");
                let want = if zero >= 3 { s / 2 } else { 4 * psi };
                assert_eq!(*v, want, "{what}: the parameters each rank keeps");
            }
            // reduce-scatter then all-gather move what DDP's all-reduce does (the ZeRO paper's
            // 2Ψ), over all ranks together; per rank it follows the uneven whole-tensor shards.
            // The difference: the squared norms' slots, all-reduced, and the start's broadcast.
            // Stage 3 gathers every value twice a step (forward and backward) instead of once
            // after the update (the paper's 3Ψ), once per test batch in the final evaluation
            // (sharded like training's forward: every rank runs it), and once more at the end
            // for the report
            let (zero_bytes, plain): (u64, u64) =
                (r.comm_bytes.iter().sum(), ddp.comm_bytes.iter().sum());
            let slack = 16 * n as u64 * c.steps * params.len() as u64;
            if zero < 3 {
                assert!(
                    zero_bytes >= plain && zero_bytes <= plain + slack,
                    "{what}: {zero_bytes} vs {plain}"
                );
            } else {
                eprintln!("{what}: {zero_bytes} bytes vs DDP's {plain}");
                let Ok(wgtrain::train::Task::Rows(d)) = wgtrain::train::load_task(&c) else {
                    unreachable!("the digits")
                };
                let evals = d.test_y.len().div_ceil(c.micro_batch()) as u64;
                // a gather of every value moves half what an all-reduce of the gradients does
                let gather = plain / c.steps / 2;
                let lo = plain * 3 / 2 + evals * gather;
                let hi = lo + plain / c.steps + slack;
                assert!(
                    zero_bytes >= lo * 9 / 10 && zero_bytes <= hi,
                    "{what}: {zero_bytes} vs 1.5 × {plain}"
                );
            }
        }
    }
}

#[test]
fn zero_2_with_micro_batches_per_rank_adds_each_reduced_micro_batch_into_its_shard() {
    // two micro-batches per rank: stage 2 reduces each micro-batch's buckets inside its
    // backward and adds the reduced sums, (g0 + g2) + (g1 + g3) where one device adds
    // ((g0 + g1) + g2) + g3: the same terms in another order, a few ulps
    let mut c = mlp();
    c.micro_batch_size = 12;
    let gpus = Gpu::open_n(None, 2).unwrap();
    let options = DdpOptions {
        zero: 2,
        ..DdpOptions::default()
    };
    let r = ddp::train(&gpus, comms(2), &c, &options).unwrap();
    let (losses, params) = one_device(&c, 4);
    close_to_one_device(&r, &losses, &params);
    // and the sums did take another order (the accumulating path ran)
    assert_ne!(r.params, params);
}

#[test]
fn the_parameter_server_equals_one_device_bit_for_bit_and_alone_holds_the_state() {
    let c = mlp();
    for n in [2, 3] {
        let gpus = Gpu::open_n(None, n).unwrap();
        let options = DdpOptions {
            mode: Mode::Dp,
            // several buckets each way
            bucket_bytes: 16 << 10,
            first_bucket_bytes: 16 << 10,
            ..DdpOptions::default()
        };
        let r = ddp::train(&gpus, comms(n), &c, &options).unwrap();
        assert!(r.buckets > 1);
        // the server sums in rank order as the all-reduce does; a replica whose weights missed
        // an update would give another gradient, and the next step's loss would differ
        let (losses, params) = one_device(&c, n);
        assert_eq!(r.losses, losses, "dp on {n} ranks: losses");
        assert_eq!(r.params, params, "dp on {n} ranks: parameters");
        let psi: u64 = params.iter().map(|(_, v)| v.len() as u64).sum();
        let state: Vec<u64> = r
            .memory
            .iter()
            .map(|m| m.peak.get(wgtrain::gpu::Category::OptimizerState))
            .collect();
        assert_eq!(state[0], 8 * psi, "AdamW's state on the server");
        assert!(state[1..].iter().all(|&s| s == 0), "{state:?}");
        // per step a replica sends its gradients and receives the weights (4Ψ bytes each);
        // the server receives and sends that for every replica; plus the start's broadcast
        // and the loss
        let step = 2 * 4 * psi * c.steps;
        let start = 4 * psi;
        let (server, replicas) = (r.comm_bytes[0], &r.comm_bytes[1..]);
        let k = n as u64 - 1;
        assert!(server >= k * (step + start) && server < k * (step + start) + 4096);
        for &b in replicas {
            assert!(b >= step + start && b < step + start + 4096, "{b}");
        }
    }
    let gpus = Gpu::open_n(None, 2).unwrap();
    let dp_zero = DdpOptions {
        mode: Mode::Dp,
        zero: 1,
        ..DdpOptions::default()
    };
    let e = ddp::train(&gpus, comms(2), &c, &dp_zero).err().unwrap();
    assert!(e.to_string().contains("--parallel ddp with --zero"), "{e}");
}

#[test]
fn a_checkpoint_resumes_on_several_ranks_in_every_mode_as_an_unbroken_run() {
    // under mixed precision too: a ZeRO 1 or 2 owner (the server) restores the f32 masters it
    // holds and sends the others their working copies
    for precision in [Precision::Fp32, Precision::Bf16] {
        resumes_as_an_unbroken_run(precision);
    }
}

fn resumes_as_an_unbroken_run(precision: Precision) {
    let dir = crate::TmpDir::new(&format!("ddp-resume-{precision:?}"));
    let mut c = mlp();
    c.precision = precision;
    let (losses, params) = one_device(&c, 2);
    let mut first = c.clone();
    first.steps = 3;
    // the first 3 steps on one device (the global batch as 2 micro-batches) and on 2 ranks
    let from_one = dir.join("one.safetensors");
    {
        let gpu = Gpu::new(None).unwrap();
        let mut f = first.clone();
        f.micro_batch_size = c.batch_size / 2;
        let mut t = Trainer::new(&gpu, f).unwrap();
        for _ in 0..3 {
            t.train_step(false).unwrap();
        }
        t.save(&from_one).unwrap();
    }
    let from_two = dir.join("two").join(CHECKPOINT_FILE);
    let gpus = Gpu::open_n(None, 2).unwrap();
    first.out = Some(dir.join("two").to_str().unwrap().into());
    ddp::train(&gpus, comms(2), &first, &DdpOptions::default()).unwrap();
    // then to step 5 on 2 ranks, every mode: the unbroken one-device run, bit for bit
    for ckpt in [&from_one, &from_two] {
        for (mode, zero) in [
            (Mode::Ddp, 0),
            (Mode::Ddp, 1),
            (Mode::Ddp, 2),
            (Mode::Ddp, 3),
            (Mode::Dp, 0),
        ] {
            let options = DdpOptions {
                mode,
                zero,
                resume: Some(ckpt.clone()),
                ..DdpOptions::default()
            };
            let r = ddp::train(&gpus, comms(2), &c, &options).unwrap();
            let what = format!(
                "{precision:?}, {mode:?}, zero {zero}, from {}",
                ckpt.display()
            );
            assert_eq!(r.losses, losses[3..], "{what}: losses");
            assert_eq!(r.params, params, "{what}: parameters");
        }
    }
}

#[test]
fn a_zero_checkpoint_is_whole_and_resumes_on_one_device() {
    let dir = crate::TmpDir::new("zero-ckpt");
    let c = mlp();
    let gpus = Gpu::open_n(None, 2).unwrap();
    // one device: the same run for one more step
    let mut longer = c.clone();
    longer.steps += 1;
    let (losses, _) = one_device(&longer, 2);
    for zero in [1, 2, 3] {
        let out = dir.join(format!("zero{zero}"));
        let path = out.join(CHECKPOINT_FILE);
        let options = DdpOptions {
            zero,
            ..DdpOptions::default()
        };
        let mut saving = c.clone();
        saving.out = Some(out.to_str().unwrap().into());
        ddp::train(&gpus, comms(2), &saving, &options).unwrap();
        let gpu = Gpu::new(None).unwrap();
        let mut resumed_config = longer.clone();
        resumed_config.micro_batch_size = c.batch_size / 2;
        let mut t = Trainer::new(&gpu, resumed_config).unwrap();
        let report = t
            .resume(&wgtrain::train::checkpoint::Checkpoint::load(&path).unwrap())
            .unwrap();
        assert!(
            report.unused.is_empty(),
            "ZeRO {zero}: every tensor used: {report:?}"
        );
        let next = t.train_step(true).unwrap().unwrap();
        assert_eq!(
            next, losses[c.steps as usize],
            "ZeRO {zero}: the step after the checkpoint"
        );
    }
}

#[test]
fn each_ranks_planned_peaks_equal_its_measured_ones_to_the_byte() {
    let mut gpt = TrainConfig {
        batch_size: 8,
        steps: 2,
        ..TrainConfig::default()
    };
    gpt.gpt.n_layer = 2;
    gpt.gpt.n_embd = 32;
    gpt.addition.test_size = 10;
    let mut mlp = mlp();
    mlp.steps = 2;
    for (what, c, n) in [("mlp", &mlp, 2), ("mlp", &mlp, 3), ("gpt", &gpt, 2)] {
        for (zero, mode) in [
            (0, Mode::Ddp),
            (1, Mode::Ddp),
            (2, Mode::Ddp),
            (3, Mode::Ddp),
            (0, Mode::Dp),
        ] {
            let options = DdpOptions {
                zero,
                mode,
                ..DdpOptions::default()
            };
            let gpus = Gpu::open_n(None, n).unwrap();
            let predicted = ddp::plan(&gpus, c, &options).unwrap();
            let r = ddp::train(&gpus, comms(n), c, &options).unwrap();
            for (rank, (p, m)) in predicted.iter().zip(&r.memory).enumerate() {
                for cat in wgtrain::gpu::Category::ALL {
                    assert_eq!(
                        p.peak.get(cat),
                        m.peak.get(cat),
                        "{what}, {n} ranks, zero {zero}, {mode:?}, rank {rank}: {}",
                        cat.name()
                    );
                }
                assert_eq!(
                    p.peak_total, m.peak_total,
                    "{what} {n} zero {zero} rank {rank}"
                );
            }
        }
    }
}

/// `eval_every` and `checkpoint_every` under data parallel: each ZeRO stage evaluates and
/// checkpoints mid-run exactly as one device does (the same records, bit for bit), and the
/// mid-run checkpoint resumes on one device and on 3 ranks as the unbroken run continues.
/// (Before the one outer loop, a multi-device run ignored both and checkpointed only at the end.)
#[test]
fn data_parallel_runs_evaluate_and_checkpoint_mid_run_like_one_device() {
    let dir = crate::TmpDir::new("ddp-fit");
    let mut c = mlp();
    c.log_every = 1;
    c.eval_every = 2;
    c.checkpoint_every = 2;
    let gpu = Gpu::new(None).unwrap();
    // one device, the global batch as 2 micro-batches
    let one = Recorder::new(dir.join("one"));
    let mut single = c.clone();
    single.micro_batch_size = c.batch_size / 2;
    single.out = Some(dir.join("one-out").to_str().unwrap().into());
    let mut t = Trainer::new(&gpu, single).unwrap();
    t.fit(&mut Local, &one).unwrap();
    let expected = one.take();
    let at = |s: u64| {
        expected
            .iter()
            .filter(|l| l.starts_with(&format!("step {s} ")))
            .count()
    };
    assert_eq!((at(1), at(5)), (1, 1), "{expected:?}");
    let kinds: Vec<&str> = expected
        .iter()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "step",
            "step",
            "eval",
            "checkpoint",
            "step",
            "step",
            "eval",
            "checkpoint",
            "step",
            "eval",
            "checkpoint"
        ]
    );
    drop(t);
    let gpus = Gpu::open_n(None, 3).unwrap();
    for zero in [0, 1, 2, 3] {
        let rec = Recorder::new(dir.join(format!("zero{zero}")));
        let mut cz = c.clone();
        cz.out = Some(dir.join(format!("zero{zero}-out")).to_str().unwrap().into());
        let options = DdpOptions {
            zero,
            ..DdpOptions::default()
        };
        ddp::train_observed(&gpus[..2], comms(2), &cz, &options, &rec).unwrap();
        assert_eq!(
            rec.take(),
            expected,
            "ZeRO {zero}: the records of one device"
        );
    }
    // resume the step-2 checkpoint of the ZeRO 3 run: on one device (2 micro-batches) it
    // continues as the unbroken run; on 3 ranks as one device with 3 micro-batches does
    let mid = dir.join("zero3").join("at2.safetensors");
    let later = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|l| !l.starts_with("checkpoint"))
            .collect()
    };
    let tail = |micro: usize, layout: &str| -> Vec<String> {
        let rec = Recorder::new(dir.join(format!("resumed-{layout}")));
        let mut r = c.clone();
        r.checkpoint_every = 0;
        r.micro_batch_size = c.batch_size / micro;
        let mut t = Trainer::new(&gpu, r).unwrap();
        t.resume(&wgtrain::train::checkpoint::Checkpoint::load(&mid).unwrap())
            .unwrap();
        t.fit(&mut Local, &rec).unwrap();
        later(rec.take())
    };
    let unbroken: Vec<String> = later(expected[4..].to_vec());
    assert_eq!(tail(2, "one"), unbroken, "resumed on one device");
    let rec = Recorder::new(dir.join("resumed-3"));
    let mut r = c.clone();
    r.checkpoint_every = 0;
    let options = DdpOptions {
        zero: 3,
        resume: Some(mid.clone()),
        ..DdpOptions::default()
    };
    ddp::train_observed(&gpus, comms(3), &r, &options, &rec).unwrap();
    assert_eq!(later(rec.take()), tail(3, "one-3"), "resumed on 3 ranks");
}

/// Mixed precision under data parallel: bf16 and fp16 (with its loss scaler) under DDP, ZeRO
/// 1-3 and the parameter server equal one device running the global batch as 2 micro-batches
/// bit for bit. Each rank's gradients are f32 (summed over the ranks in f32, as one device sums
/// its micro-batches' in f32); the masters stay f32, every rank rounds its half working copy
/// from the master it updated or received, and a value ZeRO 3 gathers gets its working copy
/// rounded from it. Each rank's plan equals its measured peaks. (Before: mixed precision
/// refused every multi-device run.)
#[test]
fn mixed_precision_under_ddp_zero_and_the_server_equals_one_device_bit_for_bit() {
    use wgtrain::gpu::Category;
    use wgtrain::train::config::Precision;
    let gpus = Gpu::open_n(None, 2).unwrap();
    let f16 = gpus[0].features().contains(wgpu::Features::SHADER_F16);
    for precision in [Precision::Bf16, Precision::Fp16] {
        if precision == Precision::Fp16 && !f16 {
            eprintln!("(fp16 skipped: the adapter has no SHADER_F16)");
            continue;
        }
        let mut c = mlp();
        c.precision = precision;
        c.steps = 3;
        let (losses, params) = one_device(&c, 2);
        let psi: u64 = params.iter().map(|(_, v)| v.len() as u64).sum();
        let mut f32_run = c.clone();
        f32_run.precision = Precision::Fp32;
        for (mode, zero) in [
            (Mode::Ddp, 0),
            (Mode::Ddp, 1),
            (Mode::Ddp, 2),
            (Mode::Ddp, 3),
            (Mode::Dp, 0),
        ] {
            let options = DdpOptions {
                mode,
                zero,
                ..DdpOptions::default()
            };
            let what = format!("{precision:?}, {mode:?}, ZeRO {zero}");
            let predicted = ddp::plan(&gpus, &c, &options).unwrap();
            let r = ddp::train(&gpus, comms(2), &c, &options).unwrap();
            assert_eq!(r.losses, losses, "{what}: losses");
            assert_eq!(r.params, params, "{what}: parameters");
            for (p, m) in predicted.iter().zip(&r.memory) {
                assert_eq!(p.peak_total, m.peak_total, "{what}: planned peak");
            }
            // The f32 masters and AdamW's 8 bytes (12Ψ of optimizer state) live where the
            // update runs: on every DDP rank, in shares under ZeRO, on the server alone; every
            // rank keeps the half working copies (2Ψ), ZeRO 3 its share of them
            let peaks = |cat| -> Vec<u64> { r.memory.iter().map(|m| m.peak.get(cat)).collect() };
            let (state, work) = (peaks(Category::OptimizerState), peaks(Category::Params));
            match (mode, zero) {
                (Mode::Ddp, 0) => assert_eq!(state, [12 * psi; 2], "{what}"),
                (Mode::Dp, _) => assert_eq!(state, [12 * psi, 0], "{what}"),
                _ => {
                    assert_eq!(state.iter().sum::<u64>(), 12 * psi, "{what}: {state:?}");
                    assert!(state.iter().all(|&s| s < 12 * psi), "{what}: {state:?}");
                }
            }
            match zero {
                3 => assert_eq!(work.iter().sum::<u64>(), 2 * psi, "{what}: {work:?}"),
                _ => assert_eq!(work, [2 * psi; 2], "{what}"),
            }
            // weights travel as the half working copies the layers read: ZeRO's gathers and
            // the server's broadcast move fewer bytes than in f32 (gradients are f32 on a rank
            // in both, see `Collective`)
            if zero > 0 || mode == Mode::Dp {
                let wide = ddp::train(&gpus, comms(2), &f32_run, &options).unwrap();
                let (half, full): (u64, u64) =
                    (r.comm_bytes.iter().sum(), wide.comm_bytes.iter().sum());
                assert!(half < full, "{what}: {half} bytes vs {full} in f32");
            }
        }
    }
}

#[test]
fn an_overflow_on_any_rank_skips_that_step_on_every_rank_as_one_device_does() {
    // fp16 with a loss scale far too large for the first steps' gradients (halved at each overflow until they fit, then stepping): each rank's found-inf
    // is its part of the global norm, summed over the ranks before the guard reads it, so every
    // rank skips the same steps (and halves the scale) as one device does
    let gpus = Gpu::open_n(None, 2).unwrap();
    if !gpus[0].features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("(skipped: the adapter has no SHADER_F16)");
        return;
    }
    let mut c = mlp();
    c.precision = Precision::Fp16;
    c.initial_loss_scale = 2f32.powi(30);
    c.steps = 12;
    let mut one = c.clone();
    one.micro_batch_size = c.batch_size / 2;
    let mut t = Trainer::new(&gpus[0], one).unwrap();
    for _ in 0..c.steps {
        t.train_step(false).unwrap();
    }
    let s = t.step_state().unwrap();
    eprintln!("one device: {s:?}");
    assert!(s.overflows >= 1 && s.steps_taken >= 1, "{s:?}");
    every_mode_equals_one_device(&gpus, &c);
}
