//! wgtrain as a library: open a device, describe a small GPT, and train it on a text held in
//! memory with the trainer's one loop ([`Trainer::fit`]: the step guard, the schedule,
//! evaluation and checkpoints come with it), hearing the run through an [`Observer`]. An
//! application that already renders with wgpu would use `Gpu::from_device(device, queue)`
//! instead of `Gpu::new`.
//!
//!     cargo run --release --example train_library

use wgtrain::data::text::Text;
use wgtrain::train::{Event, Local, ModelKind, Observer, Task, TrainConfig, Trainer};
use wgtrain::Gpu;

/// Prints what the run reports.
struct Print;

impl Observer for Print {
    fn observe(&self, event: Event<'_>) -> wgtrain::Result<()> {
        match event {
            Event::Step(s) => println!("step {:>2}: loss {:.3}", s.step, s.loss),
            Event::Eval { step, result } => {
                println!("step {step:>2}: eval loss {:.3}", result.loss)
            }
            Event::Checkpoint { path, .. } => println!("checkpoint {}", path.display()),
        }
        Ok(())
    }
}

fn main() -> Result<(), wgtrain::Error> {
    let gpu = Gpu::new(None)?;
    let mut config = TrainConfig::preset(ModelKind::Gpt, "in-memory text");
    (config.gpt.block_size, config.gpt.n_layer, config.gpt.n_head) = (16, 1, 2);
    config.gpt.n_embd = 32;
    (config.batch_size, config.steps, config.lr) = (4, 30, 3e-3);
    (config.log_every, config.eval_every) = (10, 15);
    let text = b"the quick brown fox jumps over the lazy dog. ".repeat(8);
    let task = Task::Text(Text::from_bytes(text).map_err(wgtrain::Error::Data)?);
    let mut trainer = Trainer::with_task(&gpu, config, task)?;
    let report = trainer.fit(&mut Local, &Print)?;
    let mem = gpu.memory();
    println!(
        "final eval loss {:.3}; peak {} bytes; {} submits, {} dispatches",
        report.eval.map_or(f32::NAN, |r| r.loss),
        mem.peak_total,
        gpu.stats().submits,
        gpu.stats().dispatches
    );
    Ok(())
}
