//! Every WGSL kernel family, embedded in the binary with `include_str!`.

/// One `shaders/<family>.wgsl` file: the forward and backward entry points of a kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Matmul,
    MatmulSubgroup,
    /// Derived from `matmul_subgroup.wgsl` at run time (see [`matmul_f16_source`]); needs
    /// SHADER_F16.
    MatmulSubgroupF16,
    /// Workgroup-memory tiles, for GPUs.
    MatmulTiled,
    Elementwise,
    SoftmaxXent,
    Layernorm,
    LayernormSubgroup,
    Rmsnorm,
    Rope,
    Ggml,
    SoftmaxXentSubgroup,
    AttentionSubgroup,
    Embedding,
    Attention,
    AttentionCached,
    AttentionFused,
    Reduce,
    Cast,
    Pad,
    Qmatmul,
    Kashin,
    Dropout,
    OptimSgd,
    OptimRmsprop,
    OptimAdam,
    OptimLion,
    OptimNagGs,
    OptimAdam8bit,
    Guard,
    SecondOrder,
    /// A family with some read-only inputs read from operand textures (see [`TextureForm`]).
    Textured(&'static TextureForm),
    /// A matmul family with a GELU in its stores (see [`GeluForm`]).
    Gelu(&'static GeluForm),
}

impl Shader {
    pub const ALL: [Shader; 31] = [
        Shader::Matmul,
        Shader::MatmulSubgroup,
        Shader::MatmulSubgroupF16,
        Shader::MatmulTiled,
        Shader::Elementwise,
        Shader::SoftmaxXent,
        Shader::Layernorm,
        Shader::LayernormSubgroup,
        Shader::Rmsnorm,
        Shader::Rope,
        Shader::Ggml,
        Shader::SoftmaxXentSubgroup,
        Shader::AttentionSubgroup,
        Shader::Embedding,
        Shader::Attention,
        Shader::AttentionCached,
        Shader::AttentionFused,
        Shader::Reduce,
        Shader::Cast,
        Shader::Pad,
        Shader::Qmatmul,
        Shader::Kashin,
        Shader::Dropout,
        Shader::OptimSgd,
        Shader::OptimRmsprop,
        Shader::OptimAdam,
        Shader::OptimLion,
        Shader::OptimNagGs,
        Shader::OptimAdam8bit,
        Shader::Guard,
        Shader::SecondOrder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shader::Textured(form) => form.name,
            Shader::Gelu(form) => form.name,
            Shader::Matmul => "matmul",
            Shader::MatmulSubgroup => "matmul_subgroup",
            Shader::MatmulSubgroupF16 => "matmul_subgroup (f16)",
            Shader::MatmulTiled => "matmul_tiled",
            Shader::Elementwise => "elementwise",
            Shader::SoftmaxXent => "softmax_xent",
            Shader::Layernorm => "layernorm",
            Shader::LayernormSubgroup => "layernorm_subgroup",
            Shader::Rmsnorm => "rmsnorm",
            Shader::Rope => "rope",
            Shader::Ggml => "ggml",
            Shader::SoftmaxXentSubgroup => "softmax_xent_subgroup",
            Shader::AttentionSubgroup => "attention_subgroup",
            Shader::Embedding => "embedding",
            Shader::Attention => "attention",
            Shader::AttentionCached => "attention_cached",
            Shader::AttentionFused => "attention_fused",
            Shader::Reduce => "reduce",
            Shader::Cast => "cast",
            Shader::Pad => "pad",
            Shader::Qmatmul => "qmatmul",
            Shader::Kashin => "kashin",
            Shader::Dropout => "dropout",
            Shader::OptimSgd => "optim/sgd",
            Shader::OptimRmsprop => "optim/rmsprop",
            Shader::OptimAdam => "optim/adam",
            Shader::OptimLion => "optim/lion",
            Shader::OptimNagGs => "optim/nag_gs",
            Shader::OptimAdam8bit => "optim/adam8bit",
            Shader::Guard => "guard",
            Shader::SecondOrder => "second_order",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Textured(form) => form.source(),
            Shader::Gelu(form) => form.source(),
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::MatmulSubgroup => include_str!("../../shaders/matmul_subgroup.wgsl"),
            Shader::MatmulSubgroupF16 => matmul_f16_source(),
            Shader::MatmulTiled => include_str!("../../shaders/matmul_tiled.wgsl"),
            Shader::Elementwise => include_str!("../../shaders/elementwise.wgsl"),
            Shader::SoftmaxXent => include_str!("../../shaders/softmax_xent.wgsl"),
            Shader::Layernorm => include_str!("../../shaders/layernorm.wgsl"),
            Shader::LayernormSubgroup => include_str!("../../shaders/layernorm_subgroup.wgsl"),
            Shader::Rmsnorm => include_str!("../../shaders/rmsnorm.wgsl"),
            Shader::Rope => include_str!("../../shaders/rope.wgsl"),
            Shader::Ggml => ggml_source(),
            Shader::SoftmaxXentSubgroup => {
                include_str!("../../shaders/softmax_xent_subgroup.wgsl")
            }
            Shader::AttentionSubgroup => include_str!("../../shaders/attention_subgroup.wgsl"),
            Shader::Embedding => include_str!("../../shaders/embedding.wgsl"),
            Shader::Attention => include_str!("../../shaders/attention.wgsl"),
            Shader::AttentionCached => include_str!("../../shaders/attention_cached.wgsl"),
            Shader::AttentionFused => include_str!("../../shaders/attention_fused.wgsl"),
            Shader::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Shader::Cast => include_str!("../../shaders/cast.wgsl"),
            Shader::Pad => include_str!("../../shaders/pad.wgsl"),
            Shader::Qmatmul => include_str!("../../shaders/qmatmul.wgsl"),
            Shader::Kashin => include_str!("../../shaders/kashin.wgsl"),
            Shader::Dropout => include_str!("../../shaders/dropout.wgsl"),
            Shader::OptimSgd => include_str!("../../shaders/optim/sgd.wgsl"),
            Shader::OptimRmsprop => include_str!("../../shaders/optim/rmsprop.wgsl"),
            Shader::OptimAdam => include_str!("../../shaders/optim/adam.wgsl"),
            Shader::OptimLion => include_str!("../../shaders/optim/lion.wgsl"),
            Shader::OptimNagGs => include_str!("../../shaders/optim/nag_gs.wgsl"),
            Shader::OptimAdam8bit => include_str!("../../shaders/optim/adam8bit.wgsl"),
            Shader::Guard => include_str!("../../shaders/guard.wgsl"),
            Shader::SecondOrder => include_str!("../../shaders/second_order.wgsl"),
        }
    }
}

/// A kernel family whose read-only `array<vec4<f32>>` inputs `inputs` are read from operand
/// textures instead (`gpu::texture`'s flat layout: vec4 i at texel (i % TEXELS_PER_ROW,
/// i / TEXELS_PER_ROW)), derived from the family's source at run time: each declaration becomes
/// a `texture_2d<f32>` at the same binding and each `name[i]` a `texel(name, i)`. For CPU
/// adapters, where a texel fetch is one call for all SIMD lanes and a storage read a loop over
/// them; the host copies each input into a texture first (`ops::dispatch_items_textured`). Every
/// other operation stays, so both forms give the same bits.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextureForm {
    pub base: Shader,
    pub name: &'static str,
    pub inputs: &'static [&'static str],
}

/// The CPU adapters' matmul: A and B through textures (`read_a`/`read_b`).
pub static MATMUL_SUBGROUP_TEXTURES: TextureForm = TextureForm {
    base: Shader::MatmulSubgroup,
    name: "matmul_subgroup (textures)",
    inputs: &["a", "b"],
};

pub static LAYERNORM_SUBGROUP_TEXTURES: TextureForm = TextureForm {
    base: Shader::LayernormSubgroup,
    name: "layernorm_subgroup (textures)",
    inputs: &["x", "w", "b", "dout", "bx", "bw"],
};

pub static SOFTMAX_XENT_SUBGROUP_TEXTURES: TextureForm = TextureForm {
    base: Shader::SoftmaxXentSubgroup,
    name: "softmax_xent_subgroup (textures)",
    inputs: &["logits4"],
};

pub static ATTENTION_SUBGROUP_TEXTURES: TextureForm = TextureForm {
    base: Shader::AttentionSubgroup,
    name: "attention_subgroup (textures)",
    inputs: &["sb_att4"],
};

pub static LAYERNORM_TEXTURES: TextureForm = TextureForm {
    base: Shader::Layernorm,
    name: "layernorm (textures)",
    inputs: &["dout4", "bx4"],
};

pub static ELEMENTWISE_TEXTURES: TextureForm = TextureForm {
    base: Shader::Elementwise,
    name: "elementwise (textures)",
    inputs: &["x4", "y4"],
};

pub static REDUCE_TEXTURES: TextureForm = TextureForm {
    base: Shader::Reduce,
    name: "reduce (textures)",
    inputs: &["x4"],
};

pub static ATTENTION_TEXTURES: TextureForm = TextureForm {
    base: Shader::Attention,
    name: "attention (textures)",
    inputs: &["sq4_qkv", "sp4_x", "mg4_xh", "mq4_dq", "mq4_dk", "mq4_dv"],
};

impl TextureForm {
    /// Every form the ops use (validated by a unit test).
    pub const ALL: [&'static TextureForm; 9] = [
        &MATMUL_SUBGROUP_TEXTURES,
        &MATMUL_SUBGROUP_GELU_TEXTURES,
        &ATTENTION_SUBGROUP_TEXTURES,
        &LAYERNORM_SUBGROUP_TEXTURES,
        &SOFTMAX_XENT_SUBGROUP_TEXTURES,
        &LAYERNORM_TEXTURES,
        &ELEMENTWISE_TEXTURES,
        &REDUCE_TEXTURES,
        &ATTENTION_TEXTURES,
    ];

    pub fn source(&'static self) -> &'static str {
        derived(Shader::Textured(self), || {
            with_texture_reads(self.base.source(), self.inputs)
        })
    }
}

/// A derived shader's source, made by `derive` on first use and kept for the process (a handful
/// of strings).
fn derived(shader: Shader, derive: impl FnOnce() -> String) -> &'static str {
    static DERIVED: std::sync::Mutex<Vec<(Shader, &'static str)>> =
        std::sync::Mutex::new(Vec::new());
    let find = |derived: &[(Shader, &'static str)]| {
        derived
            .iter()
            .find(|(s, _)| *s == shader)
            .map(|(_, src)| *src)
    };
    if let Some(src) = find(&DERIVED.lock().unwrap()) {
        return src;
    }
    // derived without the lock: a form of a form asks for its base's source
    let src = derive();
    let mut derived = DERIVED.lock().unwrap();
    if let Some(src) = find(&derived) {
        return src;
    }
    let src: &'static str = Box::leak(src.into_boxed_str());
    derived.push((shader, src));
    src
}

/// A matmul kernel family (`base`) with a GELU in its stores: `shaders/matmul_gelu.wgsl` in
/// place of the family's no-op `epilogue_aux`, which adds binding 5 (`aux`, (M, N) like C) and
/// the override `GELU_GRAD` (a texture form can derive from the result:
/// [`MATMUL_SUBGROUP_GELU_TEXTURES`]). Forward, C gets a Linear layer's
/// pre-activation and aux its GELU; backward, C gets the gradient at the pre-activation from the
/// one at the GELU's output (the product) and the pre-activation (aux). The same expressions as
/// the elementwise GELU kernels, so the same bits as the matmul and those kernels one after the
/// other, in one pass over C instead of three.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct GeluForm {
    pub base: Shader,
    pub name: &'static str,
}

/// The no-op hook every matmul family's stores call, which a [`GeluForm`] replaces.
const EPILOGUE_AUX: &str =
    "fn epilogue_aux(ci: u32, v: vec4<f32>) -> vec4<f32> {\n    return v;\n}\n";

pub static MATMUL_SUBGROUP_GELU: GeluForm = GeluForm {
    base: Shader::MatmulSubgroup,
    name: "matmul_subgroup (gelu)",
};

pub static MATMUL_TILED_GELU: GeluForm = GeluForm {
    base: Shader::MatmulTiled,
    name: "matmul_tiled (gelu)",
};

/// The CPU adapters' matmul with the GELU in its stores.
pub static MATMUL_SUBGROUP_GELU_TEXTURES: TextureForm = TextureForm {
    base: Shader::Gelu(&MATMUL_SUBGROUP_GELU),
    name: "matmul_subgroup (gelu, textures)",
    inputs: &["a", "b"],
};

impl GeluForm {
    /// Every form the ops use (validated by a unit test; the texture form of the subgroup one is
    /// in [`TextureForm::ALL`]).
    pub const ALL: [&'static GeluForm; 2] = [&MATMUL_SUBGROUP_GELU, &MATMUL_TILED_GELU];

    pub fn source(&'static self) -> &'static str {
        derived(Shader::Gelu(self), || {
            let base = self.base.source();
            assert_eq!(
                base.matches(EPILOGUE_AUX).count(),
                1,
                "{}: one no-op epilogue_aux",
                self.name
            );
            let gelu = include_str!("../../shaders/matmul_gelu.wgsl");
            // the override at the top: declared in the snippet, mid-module, naga 30's pipeline
            // constants pass panicked on the order of the overrides' handles
            format!(
                "override GELU_GRAD: bool = false;\n{}",
                base.replace(EPILOGUE_AUX, gelu)
            )
        })
    }
}

/// `source` with each of `inputs` (a `var<storage, read> NAME: array<vec4<f32>>;`, declared
/// exactly once) declared as a texture, every `NAME[i]` read as `texel(NAME, i)`, and `texel`
/// appended.
fn with_texture_reads(source: &str, inputs: &[&str]) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    assert!(
        !source.contains("texel("),
        "the source defines its own texel()"
    );
    let mut src = source.to_string();
    for name in inputs {
        let decl = format!("var<storage, read> {name}: array<vec4<f32>>;");
        assert_eq!(
            src.matches(&decl).count(),
            1,
            "{name}: declared once as read-only vec4s"
        );
        src = src.replace(&decl, &format!("var {name}: texture_2d<f32>;"));
        assert!(
            !src.contains(&format!("arrayLength(&{name})")),
            "{name}: arrayLength"
        );
        let pattern = format!("{name}[");
        let mut out = String::with_capacity(src.len());
        let mut rest = src.as_str();
        while let Some(at) = rest.find(&pattern) {
            let before = rest[..at].chars().next_back();
            out.push_str(&rest[..at]);
            let after = &rest[at + pattern.len()..];
            if before.is_some_and(|c| ident(c) || c == '.') {
                out.push_str(&pattern);
                rest = after;
                continue;
            }
            // the index runs to the matching ']'
            let mut depth = 1;
            let end = after
                .char_indices()
                .find_map(|(i, c)| {
                    match c {
                        '[' => depth += 1,
                        ']' => depth -= 1,
                        _ => {}
                    }
                    (depth == 0).then_some(i)
                })
                .unwrap_or_else(|| panic!("{name}[: no closing bracket"));
            out.push_str(&format!("texel({name}, {})", &after[..end]));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        src = out;
    }
    let w = super::texture::TEXELS_PER_ROW;
    src.push_str(&format!(
        "\n// the operand textures' flat layout (src/gpu/texture.rs)\n\
         fn texel(t: texture_2d<f32>, i: u32) -> vec4<f32> {{\n    \
         return textureLoad(t, vec2<u32>(i % {w}u, i / {w}u), 0);\n}}\n"
    ));
    src
}

/// `matmul_subgroup.wgsl` with A and B stored as f16: the two declarations and the two
/// accessors every read goes through (`read_a`, `read_b`) change, the f32 accumulation and
/// output stay.
/// `shaders/ggml.wgsl` with cast.wgsl's `f16_to_f32_bits` appended: one integer f16 decoder
/// for the casts and the ggml blocks.
pub fn ggml_source() -> &'static str {
    static SOURCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let cast = include_str!("../../shaders/cast.wgsl");
        let start = cast
            .find("fn f16_to_f32_bits(")
            .expect("cast.wgsl defines f16_to_f32_bits");
        let end = start + cast[start..].find("\n}\n").expect("its closing brace") + 3;
        format!(
            "{}\n{}",
            include_str!("../../shaders/ggml.wgsl"),
            &cast[start..end]
        )
    });
    &SOURCE
}

pub fn matmul_f16_source() -> &'static str {
    static SOURCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        derive_matmul(
            "enable f16;\n",
            [
                (
                    "var<storage, read> a: array<vec4<f32>>;",
                    "var<storage, read> a: array<vec4<f16>>;",
                ),
                (
                    "var<storage, read> b: array<vec4<f32>>;",
                    "var<storage, read> b: array<vec4<f16>>;",
                ),
                (
                    "return a[row * width + col];",
                    "return vec4<f32>(a[row * width + col]);",
                ),
                (
                    "return b[row * width + col];",
                    "return vec4<f32>(b[row * width + col]);",
                ),
            ],
        )
    });
    &SOURCE
}

/// `matmul_subgroup.wgsl` after `prefix`, with each (from, to) replaced (each `from` must occur
/// exactly once).
fn derive_matmul(prefix: &str, replacements: [(&str, &str); 4]) -> String {
    let f32_src = include_str!("../../shaders/matmul_subgroup.wgsl");
    let mut src = format!("{prefix}{f32_src}");
    for (from, to) in replacements {
        assert_eq!(src.matches(from).count(), 1, "matmul_subgroup.wgsl: {from}");
        src = src.replace(from, to);
    }
    src
}

/// A compute entry point with its pipeline-overridable constants.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub overrides: &'static [(&'static str, f64)],
}

impl Kernel {
    pub const fn new(shader: Shader, entry: &'static str) -> Self {
        Kernel {
            shader,
            entry,
            overrides: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shader;

    /// Parses and validates a derived shader's source with naga.
    fn validate(name: &str, src: &str) {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }

    /// Every texture form parses and validates, and reads its inputs only through `texel`.
    #[test]
    fn every_texture_form_validates() {
        for form in super::TextureForm::ALL {
            let src = Shader::Textured(form).source();
            validate(form.name, src);
            for name in form.inputs {
                assert!(src.contains(&format!("var {name}: texture_2d<f32>;")));
                assert!(
                    !src.contains(&format!(" {name}[")),
                    "{}: {name}[ left",
                    form.name
                );
            }
        }
        let derived = super::with_texture_reads(
            "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\n\
             fn f(i: u32, xs: array<u32, 2>) -> vec4<f32> { return x[xs[i]] + x[i] + max_x[0]; }",
            &["x"],
        );
        assert!(derived.contains("return texel(x, xs[i]) + texel(x, i) + max_x[0];"));
    }

    /// Every GELU form parses and validates, with the GELU in its stores in place of the no-op.
    #[test]
    fn every_gelu_form_validates() {
        for form in super::GeluForm::ALL {
            let src = Shader::Gelu(form).source();
            validate(form.name, src);
            assert!(!src.contains(super::EPILOGUE_AUX), "{}", form.name);
            assert!(src.contains("aux[ci] = 0.5 * v"), "{}", form.name);
        }
    }

    /// WGSL has no imports, so the kernels that read operand textures write the row width out
    /// (Adam's by hand, the derived forms' `texel`); they must write the one the host copies
    /// with.
    #[test]
    fn texture_kernels_use_the_hosts_row_width() {
        let w = crate::gpu::texture::TEXELS_PER_ROW;
        let adam = Shader::OptimAdam.source();
        assert!(adam.contains(&format!("vec2<u32>(j % {w}u, j / {w}u)")));
        let derived = Shader::Textured(&super::MATMUL_SUBGROUP_TEXTURES).source();
        assert!(derived.contains(&format!("vec2<u32>(i % {w}u, i / {w}u)")));
    }

    /// Parses and validates every shader with naga; needs no GPU.
    #[test]
    fn every_shader_parses_and_validates() {
        fn wgsl_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    wgsl_files(&path, out);
                } else if path.extension().is_some_and(|x| x == "wgsl") {
                    out.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        let mut on_disk = vec![];
        wgsl_files(&root, &mut on_disk);
        // spliced into other families (validated in their forms)
        let snippets = [std::path::Path::new("matmul_gelu")];
        for file in &on_disk {
            let name = file.strip_prefix(&root).unwrap().with_extension("");
            assert!(
                snippets.contains(&name.as_path())
                    || Shader::ALL
                        .iter()
                        .any(|s| std::path::Path::new(s.name()) == name),
                "{} is not embedded in Shader",
                file.display()
            );
        }
        for shader in Shader::ALL {
            let module = naga::front::wgsl::parse_str(shader.source()).unwrap_or_else(|e| {
                panic!(
                    "{}.wgsl: {}",
                    shader.name(),
                    e.emit_to_string(shader.source())
                )
            });
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "{}.wgsl: {}",
                    shader.name(),
                    e.emit_to_string(shader.source())
                )
            });
        }
    }
}
