//! `wgtrain generate --model FILE.gguf`: text from a model made elsewhere, streamed as it comes,
//! with a KV cache on the device; `--chat` wraps the prompt in the model's chat template.

use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;
use wgtrain::import::chat::Message;
use wgtrain::import::Pretrained;
use wgtrain::nn::{Build, Model};
use wgtrain::rng::Rng;
use wgtrain::train::generate::{generate, Generation, Sampling};
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A GGUF file or a Hugging Face model directory (Llama family or GPT-2).
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter directory (PEFT's format, e.g. a finetune's --out) to run with the
    /// model, unmerged.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// The text to continue, or with --chat the user's message.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Apply the model's chat template (ChatML where it has none): the prompt as the user's
    /// turn, the reply as the assistant's.
    #[arg(long)]
    chat: bool,
    /// With --chat, a system message before the user's.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// 0 draws greedily.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Keep the most likely tokens holding this much of the probability (1: all).
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(adapter: Option<&str>, args: GenerateArgs) -> Result<()> {
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
    };
    sampling.validate()?;
    if args.system.is_some() && !args.chat {
        bail!("--system needs --chat");
    }
    let gpu = Gpu::new(adapter)?;
    let start = std::time::Instant::now();
    let mut p = Pretrained::load(&Build::new(&gpu), &args.model)?;
    if let Some(dir) = &args.lora {
        wgtrain::train::adapter::Adapter::load(dir)?.apply(&gpu, &mut p.model)?;
    }
    eprintln!(
        "{}: {}, {} parameters, loaded in {:.1} s on {}",
        p.vocab.name.as_deref().unwrap_or("model"),
        p.model.describe(),
        p.model.num_params(),
        start.elapsed().as_secs_f64(),
        gpu.info().name
    );
    let text = if args.chat {
        let mut messages = vec![];
        if let Some(s) = &args.system {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", &args.prompt));
        p.vocab.chat.render(&messages, true)?
    } else {
        args.prompt.clone()
    };
    let prompt = p.vocab.encode(&text)?;
    if prompt.is_empty() {
        bail!("the prompt is empty: give --prompt (or --chat, whose template writes one)");
    }
    if !args.chat {
        print!("{}", args.prompt);
    }
    let g = Generation {
        max_new: args.tokens,
        sampling,
        stop: p.vocab.stop_tokens(),
    };
    let mut ids: Vec<u32> = vec![];
    let mut printed = 0;
    let mut out = std::io::stdout();
    let mut rng = Rng::new(args.seed);
    let (_, stats) = generate(&gpu, &p.model, &prompt, &g, &mut rng, |id| {
        if g.stop.contains(&id) {
            return Ok(());
        }
        ids.push(id);
        // print what decodes whole so far (a character split across tokens waits)
        let text = p.vocab.tokenizer.decode(&ids, true)?;
        if text.len() > printed && text.is_char_boundary(printed) && !text.ends_with('\u{fffd}') {
            let _ = out.write_all(&text.as_bytes()[printed..]);
            let _ = out.flush();
            printed = text.len();
        }
        Ok(())
    })?;
    println!();
    eprintln!(
        "prefill: {} tokens in {:.2} s ({:.1} tokens/s); decode: {} tokens in {:.2} s ({:.1} \
         tokens/s){}",
        stats.prompt_tokens,
        stats.prefill.as_secs_f64(),
        stats.prefill_tokens_per_s(),
        stats.generated,
        stats.decode.as_secs_f64(),
        stats.decode_tokens_per_s(),
        if stats.stopped {
            ", stopped at the end of the reply"
        } else {
            ""
        }
    );
    Ok(())
}
