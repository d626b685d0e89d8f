//! wgtrain as a library: open a device, build a GPT, train a few steps on a text held in memory,
//! and read the loss. An application that already renders with wgpu would use
//! `Gpu::from_device(device, queue)` instead of `Gpu::new`.
//!
//!     cargo run --release --example train_library

use wgtrain::nn::gpt::GptBatch;
use wgtrain::nn::{zero_grads, Gpt, GptConfig, NoHooks};
use wgtrain::ops::reduce::{reduce, Reduction};
use wgtrain::optim::{grad_norm_sq, Optimizer, OptimizerConfig, OptimizerName};
use wgtrain::rng::Rng;
use wgtrain::{Category, Gpu, Tensor};

fn main() -> Result<(), wgtrain::Error> {
    let gpu = Gpu::new(None)?;
    let config = GptConfig {
        vocab_size: 256,
        block_size: 16,
        n_layer: 1,
        n_head: 2,
        n_embd: 32,
    };
    let mut rng = Rng::new(0);
    let mut model = Gpt::new(&gpu, config.clone(), &mut rng)?;
    let adamw = OptimizerConfig::named(OptimizerName::Adamw);
    let mut opt = Optimizer::new(&gpu, &adamw, 1.0, &model.params())?;
    let text = b"the quick brown fox jumps over the lazy dog. ".repeat(4);
    let loss_sum = Tensor::zeros(&gpu, "loss", &[1], Category::Workspace)?;
    let norm_sq = wgtrain::optim::guard::step_stats(&gpu, 1.0)?;

    for step in 0..30 {
        // a batch of 4 windows of 16 bytes, each target the next byte
        let (b, t) = (4, config.block_size);
        let mut x = vec![];
        let mut y = vec![];
        for _ in 0..b {
            let s = rng.below((text.len() - t) as u64) as usize;
            x.extend(text[s..s + t].iter().map(|&c| c as u32));
            y.extend(text[s + 1..s + t + 1].iter().map(|&c| c as u32));
        }
        let batch = GptBatch::new(&gpu, &config, &x, &y, b, t)?;
        zero_grads(&gpu, &model.params());
        let scale = 1.0 / batch.n_targets as f32;
        let losses = model.forward_backward(&gpu, &batch, scale, &mut NoHooks)?;
        let params = model.params();
        reduce(&gpu, &losses, Reduction::Sum, &loss_sum, 0, false)?;
        // the global gradient norm (clipping to 1.0), then the update that reads it
        grad_norm_sq(&gpu, &params, &norm_sq)?;
        opt.step(&gpu, &params, 3e-3, &norm_sq)?;
        if step % 10 == 9 {
            // reading the loss is the step's one sync point
            let loss = loss_sum.to_f32(&gpu)?[0] / batch.n_targets as f32;
            println!("step {:>2}: loss {loss:.3}", step + 1);
        }
    }
    let mem = gpu.memory();
    println!(
        "peak {} bytes; {} submits, {} dispatches",
        mem.peak_total,
        gpu.stats().submits,
        gpu.stats().dispatches
    );
    Ok(())
}
