//! Hugging Face model directories against transformers' semantics: `tests/data/hf/make.py`
//! writes tiny-llama (F32 and F16 tensors, grouped-query attention, an untied head, a chat
//! template) and tiny-gpt2 (two shards and an index, the `transformer.` prefix, Conv1D weights,
//! the mask buffers), each with float64 reference logits as transformers' modeling code
//! computes them. Damaged directories are refused by name before anything is allocated.

use std::path::{Path, PathBuf};
use wgtrain::import::chat::Message;
use wgtrain::import::Pretrained;
use wgtrain::nn::{Batch, Build, Model};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/hf")
        .join(name)
}

/// The largest difference between the model's logits for the reference's tokens and the
/// reference's.
fn worst_difference(p: &Pretrained, gpu: &wgtrain::Gpu, name: &str) -> f64 {
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir(name).join("ref.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
    let want: Vec<f64> = want["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let batch = Batch::Tokens {
        x: tokens.clone(),
        y: tokens.clone(),
        seq: tokens.len(),
    };
    let got = Model::logits(&p.model, gpu, &batch)
        .unwrap()
        .to_f32(gpu)
        .unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max)
}

#[test]
fn hugging_face_llama_and_gpt2_directories_give_transformers_logits() {
    let gpu = wgtrain::Gpu::new(None).unwrap();
    // f32 forwards of two blocks against float64: logits of magnitude ~1-5 to ~1e-5
    for name in ["tiny-llama", "tiny-gpt2"] {
        let p = Pretrained::load(&Build::new(&gpu), &dir(name)).unwrap();
        let worst = worst_difference(&p, &gpu, name);
        assert!(worst < 5e-5, "{name}: largest logit difference {worst:e}");
    }
    let p = Pretrained::load(&Build::new(&gpu), &dir("tiny-llama")).unwrap();
    assert!(!p.model.config.tied(), "tiny-llama's head is its own");
    assert_eq!(p.model.config.kv_heads(), 2);
    // its tokenizer_config's special tokens and chat template
    assert_eq!(
        (p.vocab.tokenizer.bos, p.vocab.tokenizer.eos),
        (
            p.vocab.tokenizer.token_id("<|im_start|>"),
            p.vocab.tokenizer.token_id("<|im_end|>")
        )
    );
    let chat = p
        .vocab
        .chat
        .render(&[Message::new("user", "hi")], true)
        .unwrap();
    assert_eq!(
        chat,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert!(p
        .vocab
        .stop_tokens()
        .contains(&p.vocab.tokenizer.eos.unwrap()));
}

/// A copy of a tiny directory with `edit` applied to one of its files.
fn damaged(
    name: &str,
    tag: &str,
    file: &str,
    edit: impl Fn(&mut Vec<u8>),
) -> (crate::TmpDir, PathBuf) {
    let tmp = crate::TmpDir::new(&format!("hf-{name}-{tag}"));
    let out = tmp.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(dir(name)).unwrap() {
        let e = e.unwrap();
        let mut bytes = std::fs::read(e.path()).unwrap();
        if e.file_name() == file {
            edit(&mut bytes);
        }
        std::fs::write(out.join(e.file_name()), bytes).unwrap();
    }
    (tmp, out)
}

fn load_err(path: &Path) -> String {
    let gpu = wgtrain::Gpu::new(None).unwrap();
    match Pretrained::load(&Build::new(&gpu), path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

fn replace(from: &str, to: &str) -> impl Fn(&mut Vec<u8>) {
    let (from, to) = (from.to_string(), to.to_string());
    move |b: &mut Vec<u8>| {
        let s = String::from_utf8(b.clone()).unwrap();
        assert!(s.contains(&from), "{from} in the file");
        *b = s.replacen(&from, &to, 1).into_bytes();
    }
}

#[test]
fn damaged_hugging_face_directories_are_refused_by_name() {
    // another architecture
    let (_t, d) = damaged(
        "tiny-llama",
        "type",
        "config.json",
        replace("\"llama\"", "\"mamba\""),
    );
    let e = load_err(&d);
    assert!(
        e.contains("model_type \"mamba\" is not one wgtrain loads"),
        "{e}"
    );
    // a setting wgtrain does not implement
    let (_t, d) = damaged(
        "tiny-llama",
        "scaling",
        "config.json",
        replace(
            "\"rope_scaling\": null",
            "\"rope_scaling\": {\"type\": \"yarn\"}",
        ),
    );
    let e = load_err(&d);
    assert!(
        e.contains("rope_scaling") && e.contains("plain RoPE"),
        "{e}"
    );
    // a config whose widths disagree with the tensors
    let (_t, d) = damaged(
        "tiny-llama",
        "ffn",
        "config.json",
        replace("\"intermediate_size\": 48", "\"intermediate_size\": 64"),
    );
    let e = load_err(&d);
    assert!(
        e.contains(
            "\"model.layers.0.mlp.down_proj.weight\" is [32, 48]; the config implies [32, 64]"
        ),
        "{e}"
    );
    // a shard the index names is missing
    let (_t, d) = damaged(
        "tiny-gpt2",
        "shard",
        "model.safetensors.index.json",
        replace("model-00002-of-00002", "model-00003-of-00002"),
    );
    let e = load_err(&d);
    assert!(e.contains("model-00003-of-00002.safetensors"), "{e}");
    // an index that points outside the directory
    let (_t, d) = damaged(
        "tiny-gpt2",
        "escape",
        "model.safetensors.index.json",
        replace(
            "\"model-00001-of-00002.safetensors\"",
            "\"../x.safetensors\"",
        ),
    );
    let e = load_err(&d);
    assert!(e.contains("is not a file name here"), "{e}");
    // a truncated weights file
    let (_t, d) = damaged("tiny-llama", "cut", "model.safetensors", |b| {
        b.truncate(b.len() - 10)
    });
    let e = load_err(&d);
    assert!(e.contains("truncated"), "{e}");
}

/// A model saved in Hugging Face layout loads back (through the same loader that reads
/// transformers' files, checked above) with the same weights, so the same logits bit for bit:
/// GPT-2 (Conv1D weights written (in, out) under `transformer.`) and an untied grouped-query
/// Llama; the weights file says format "pt".
#[test]
fn a_model_saved_in_hugging_face_layout_loads_back_bit_for_bit() {
    use wgtrain::nn::{Family, Gpt, GptConfig};
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let tmp = crate::TmpDir::new("hf-save");
    for family in [Family::Gpt2, Family::Llama] {
        let config = GptConfig {
            vocab_size: 40,
            block_size: 16,
            n_layer: 2,
            n_head: 4,
            n_embd: 16,
            family,
            n_kv_head: (family == Family::Llama).then_some(2),
            ffn_hidden: (family == Family::Llama).then_some(24),
            untied_head: family == Family::Llama,
            ..Default::default()
        };
        let model = Gpt::new(&Build::new(&gpu), config, &mut wgtrain::rng::Rng::new(6)).unwrap();
        let out = tmp.join(format!("{family:?}"));
        wgtrain::import::hf::save(&gpu, &model.config, &model.params(), &out).unwrap();
        let back = wgtrain::import::hf::load(&Build::new(&gpu), &out).unwrap();
        // the same model (the loader states the defaults it read: θ, eps)
        let shape = |c: &GptConfig| {
            let dims = (
                c.vocab_size,
                c.block_size,
                c.n_layer,
                c.n_head,
                c.n_embd,
                c.family,
            );
            (
                dims,
                c.kv_heads(),
                c.ffn(),
                c.rope_base(),
                c.eps(),
                c.tied(),
            )
        };
        assert_eq!(shape(&back.config), shape(&model.config));
        let batch = Batch::Tokens {
            x: vec![1, 5, 39, 0, 7],
            y: vec![0; 5],
            seq: 5,
        };
        let logits = |m: &Gpt| {
            Model::logits(m, &gpu, &batch)
                .unwrap()
                .to_f32(&gpu)
                .unwrap()
        };
        assert_eq!(logits(&back), logits(&model), "{family:?}");
        let (header, _) =
            wgtrain::files::open_safetensors(&out.join("model.safetensors"), "model").unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["format"], "pt");
        if family == Family::Gpt2 {
            let info = header.info("transformer.h.0.mlp.c_fc.weight").unwrap();
            assert_eq!(info.shape, [16, 64], "a Conv1D weight, (in, out)");
        }
    }
}

/// `wgtrain export --hf`: a Llama trained here for two steps, written as a Hugging Face
/// directory whose model gives the checkpoint's logits; never over a model already there.
#[test]
fn export_hf_writes_a_trained_checkpoint_as_a_hugging_face_directory() {
    use crate::cli::{stderr, wgtrain};
    let tmp = crate::TmpDir::new("export-hf");
    let config = tmp.join("llama.json");
    std::fs::write(
        &config,
        r#"{"model": "gpt", "data": "addition", "steps": 2, "batch_size": 4, "eval_every": 0,
            "addition": {"test_size": 20},
            "gpt": {"family": "llama", "block_size": 8, "n_layer": 1, "n_head": 2,
                    "n_kv_head": 1, "n_embd": 16, "ffn_hidden": 24}}"#,
    )
    .unwrap();
    let run = tmp.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let o = wgtrain(&["train", "--config", &s(&config), "--out", &s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = run.join("checkpoint.safetensors");
    let out = tmp.join("hf");
    let o = wgtrain(&["export", "--checkpoint", &s(&ckpt), "--hf", &s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let back = wgtrain::import::hf::load(&Build::new(&gpu), &out).unwrap();
    let (_, trained) = wgtrain::train::load_model(
        &gpu,
        &wgtrain::train::checkpoint::Checkpoint::load(&ckpt).unwrap(),
    )
    .unwrap();
    let batch = Batch::Tokens {
        x: vec![1, 2, 3, 4],
        y: vec![0; 4],
        seq: 4,
    };
    let logits = |m: &dyn Model| m.logits(&gpu, &batch).unwrap().to_f32(&gpu).unwrap();
    assert_eq!(logits(&back), logits(trained.as_ref()));
    // a second export onto it is refused without --overwrite
    let o = wgtrain(&["export", "--checkpoint", &s(&ckpt), "--hf", &s(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("model.safetensors"), "{}", stderr(&o));
}

/// Greedy generation through the KV cache equals the reference's greedy decoding (each token
/// from a float64 full forward of everything so far) token for token; the reference's smallest
/// margin between the best two logits (0.009) is hundreds of times the f32 logits' error.
#[test]
fn greedy_generation_equals_the_references_token_for_token() {
    use wgtrain::train::generate::{generate, Generation, Sampling};
    let gpu = wgtrain::Gpu::new(None).unwrap();
    for name in ["tiny-llama", "tiny-gpt2"] {
        let want: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir(name).join("ref.json")).unwrap())
                .unwrap();
        let prompt: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
        let greedy: Vec<u32> = serde_json::from_value(want["greedy"].clone()).unwrap();
        let p = Pretrained::load(&Build::new(&gpu), &dir(name)).unwrap();
        let g = Generation {
            max_new: greedy.len(),
            sampling: Sampling::greedy(),
            stop: vec![],
        };
        let mut rng = wgtrain::rng::Rng::new(0);
        let (got, stats) = generate(&gpu, &p.model, &prompt, &g, &mut rng, |_| Ok(())).unwrap();
        assert_eq!(got, greedy, "{name}");
        assert_eq!(
            (stats.prompt_tokens, stats.generated),
            (prompt.len(), greedy.len())
        );
    }
    // past the context (tiny-gpt2's 32 positions): the cache starts again from the last half
    let p = Pretrained::load(&Build::new(&gpu), &dir("tiny-gpt2")).unwrap();
    let g = Generation {
        max_new: 70,
        sampling: Sampling::greedy(),
        stop: vec![],
    };
    let mut rng = wgtrain::rng::Rng::new(0);
    let (got, _) = generate(&gpu, &p.model, &[5, 6, 7], &g, &mut rng, |_| Ok(())).unwrap();
    assert_eq!(got.len(), 70);
}

#[test]
fn a_chat_template_jinja_file_takes_precedence_over_tokenizer_config() {
    let (_t, d) = damaged("tiny-llama", "jinja", "none", |_| {});
    std::fs::write(
        d.join("chat_template.jinja"),
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}",
    )
    .unwrap();
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let p = Pretrained::load(&Build::new(&gpu), &d).unwrap();
    let text = p
        .vocab
        .chat
        .render(&[Message::new("user", "hi")], true)
        .unwrap();
    assert_eq!(text, "<user>hi");
}
