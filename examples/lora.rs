//! Why LoRA: pretrain a small GPT on War and Peace, then fine-tune it on a different text (this
//! project's ARCHITECTURE.md: technical prose, code names and markdown) in full, in full with
//! the token and position embeddings frozen (what LoRA leaves untouched too), and with LoRA
//! adapters of rank 2, 8 and 32, for the same number of steps, and print what each trains, the
//! gradient and optimizer-state bytes, the peak memory (the buffer pool's), the adapter file's
//! size, and the loss each reaches on the new text.
//!
//!     cargo run --release --example lora [-- PRETRAIN_STEPS FINETUNE_STEPS [LORA_LR]]

use std::io::Read;
use std::path::Path;
use wgtrain::gpu::Category;
use wgtrain::nn::lora::LoraConfig;
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::train::{adapter, Local, TrainConfig, Trainer};
use wgtrain::Gpu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|s| s.parse::<u64>());
    let pretrain_steps = args.next().transpose()?.unwrap_or(600);
    let finetune_steps = args.next().transpose()?.unwrap_or(200);
    let lora_lr: f32 = std::env::args()
        .nth(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5e-3);
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let dir = std::env::temp_dir().join(format!("wgtrain-lora-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let novel = dir.join("warandpeace.txt");
    let mut text = vec![];
    flate2::read::GzDecoder::new(std::fs::File::open(assets.join("warandpeace-400k.txt.gz"))?)
        .read_to_end(&mut text)?;
    std::fs::write(&novel, text)?;
    let new_text = dir.join("ARCHITECTURE.md");
    std::fs::write(&new_text, include_str!("../ARCHITECTURE.md"))?;

    let mut base = TrainConfig {
        data: novel.to_str().unwrap().into(),
        steps: pretrain_steps,
        batch_size: 16,
        lr: 2e-3,
        eval_every: 0,
        seed: 7,
        ..TrainConfig::default()
    };
    base.gpt.n_layer = 4;
    base.gpt.n_head = 4;
    base.gpt.n_embd = 128;
    base.gpt.block_size = 64;
    base.gpt.vocab_size = 256;
    let gpu = Gpu::new(None)?;
    let mut t = Trainer::new(&gpu, base.clone())?;
    let pretrained = t.fit(&mut Local, &())?;
    let base_ckpt = dir.join("base.safetensors");
    t.save(&base_ckpt)?;
    println!(
        "pretrained: gpt (4 layers, d_model 128, context 64), {} parameters, {pretrain_steps} steps \
         on War and Peace: eval loss {:.4}",
        t.model.num_params(),
        pretrained.eval.map_or(f32::NAN, |r| r.loss)
    );
    drop(t);
    let ckpt = Checkpoint::load(&base_ckpt)?;

    let mut tune = base.clone();
    tune.data = new_text.to_str().unwrap().into();
    tune.steps = finetune_steps;
    tune.schedule.warmup_steps = 20;
    tune.init = Some(base_ckpt.display().to_string());
    println!(
        "fine-tuning on ARCHITECTURE.md, {finetune_steps} steps, batch 16, AdamW, same schedule"
    );
    println!(
        "{:<20} {:>10} {:>12} {:>14} {:>11} {:>13} {:>9}",
        "run", "trainable", "grad bytes", "optim bytes", "peak MiB", "adapter bytes", "loss"
    );
    let runs: [(&str, Option<usize>, f32); 5] = [
        ("full fine-tune", None, 1e-3),
        ("full, wte/wpe frozen", None, 1e-3),
        ("LoRA r = 2", Some(2), lora_lr),
        ("LoRA r = 8", Some(8), lora_lr),
        ("LoRA r = 32", Some(32), lora_lr),
    ];
    for (what, r, lr) in runs {
        let mut c = tune.clone();
        c.lr = lr;
        if what.contains("frozen") {
            c.freeze = vec!["wte".into(), "wpe".into()];
        }
        c.lora = r.map(|r| LoraConfig {
            r,
            // alpha = 2r: the same scale 2 at every rank
            alpha: 2.0 * r as f32,
            targets: vec![
                "attn.qkv".into(),
                "attn.proj".into(),
                "mlp.fc".into(),
                "mlp.proj".into(),
            ],
            ..LoraConfig::default()
        });
        // a fresh device per run, so the pool's figures are this run's alone
        let gpu = Gpu::new(None)?;
        let mut t = Trainer::new(&gpu, c.clone())?;
        t.init_from(&base_ckpt)?;
        if what == "full fine-tune" {
            // the full fine-tune's first evaluation is the base model's on the new text
            println!(
                "{:<16} loss on the new text before fine-tuning: {:.4}",
                "base",
                t.evaluate()?.loss
            );
        }
        let trainable: usize = t.model.trainable_params().iter().map(|p| p.numel()).sum();
        let loss = t.fit(&mut Local, &())?.eval.map_or(f32::NAN, |r| r.loss);
        let m = gpu.memory();
        let adapter_bytes = match &c.lora {
            Some(l) => {
                let out = dir.join(format!("lora-{}", l.r));
                adapter::save(
                    &gpu,
                    &out,
                    t.model.as_ref(),
                    l,
                    "base.safetensors",
                    c.gpt.family,
                )?
                .to_string()
            }
            None => "-".into(),
        };
        println!(
            "{:<20} {:>10} {:>12} {:>14} {:>11.2} {:>13} {:>9.4}",
            what,
            trainable,
            m.peak.get(Category::Grads),
            m.peak.get(Category::OptimizerState),
            m.peak_total as f64 / (1 << 20) as f64,
            adapter_bytes,
            loss
        );
    }
    let full_weights = 4 * ckpt
        .names()
        .filter(|k| !k.starts_with("optim."))
        .map(|k| {
            ckpt.info(k)
                .map_or(0, |(_, shape)| shape.iter().product::<usize>())
        })
        .sum::<usize>();
    println!("(the base model's weights: {full_weights} bytes)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
