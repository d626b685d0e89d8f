//! The texture forms (CPU adapters: inputs copied into operand textures and read with
//! `textureLoad`) against the buffer forms, bit for bit, on one device of their own with
//! `Gpu::set_texture_reads` switching between them (the other tests run whichever form the
//! adapter picks: on lavapipe the texture forms). Shapes whose vec4 counts are not multiples of
//! a texture row (256 texels), and scalar tails; every input at least `TEXTURE_MIN_TEXELS`
//! (1024) vec4s, below which the buffer forms run everywhere.
//!
//! Also the row kernels' GPU layout (`Gpu::set_row_clusters`: eight rows a workgroup, each on 8
//! lanes, sums by a butterfly of subgroup shuffles) against the CPU one, on the same inputs.

use wgtrain::ops::attention::{attention_backward, attention_forward};
use wgtrain::ops::elementwise::{accumulate, add, gelu_backward, gelu_forward, relu_backward};
use wgtrain::ops::layernorm::{layernorm_backward, layernorm_forward};
use wgtrain::ops::reduce::{colsum, reduce, Reduction};
use wgtrain::ops::softmax_xent::softmax_xent;
use wgtrain::rng::Rng;
use wgtrain::{Category, Gpu, Tensor};

/// Every op with a texture form on fixed random inputs; each output by name.
fn outputs(gpu: &Gpu) -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Rng::new(31);
    let mut t = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_f32(
            gpu,
            "t",
            shape,
            &rng.uniform_vec(n, -1.0, 1.0),
            Category::Activations,
        )
        .unwrap()
    };
    let (rows, cols) = (37, 132); // 1221 vec4s: 4 texture rows and 197 texels
    let (x, w, b, dout) = (t(&[rows, cols]), t(&[cols]), t(&[cols]), t(&[rows, cols]));
    let odd = t(&[4103]); // 1025 vec4s and a scalar tail of 3
    let odd2 = t(&[4103]);
    let (bt, nh, c) = ((4, 32), 2, 64); // (B, T, 3C), head size 32
    let qkv = t(&[bt.0, bt.1, 3 * c]);
    let d_att_out = t(&[bt.0, bt.1, c]);
    let z = |shape: &[usize]| Tensor::zeros(gpu, "z", shape, Category::Activations).unwrap();
    let (out, mean, rstd) = (z(&[rows, cols]), z(&[rows]), z(&[rows]));
    layernorm_forward(gpu, &x, &w, &b, 1e-5, &out, &mean, &rstd);
    let (dx, dw, db) = (z(&[rows, cols]), z(&[cols]), z(&[cols]));
    layernorm_backward(gpu, &dout, &x, &w, &mean, &rstd, &dx, &dw, &db, Some(false));
    let (g, dg, sum, acc) = (
        z(&[4103]),
        z(&[4103]),
        z(&[4103]),
        odd2.clone_on(gpu).unwrap(),
    );
    gelu_forward(gpu, &odd, &g);
    gelu_backward(gpu, &odd, &odd2, &dg);
    add(gpu, &odd, &g, &sum);
    accumulate(gpu, &odd, 0.5, &acc);
    let relu = z(&[4103]);
    relu_backward(gpu, &odd, &odd2, &relu);
    let norms = z(&[2]);
    reduce(gpu, &x, Reduction::SumOfSquares, &norms, 0, false).unwrap();
    reduce(gpu, &odd, Reduction::Sum, &norms, 1, false).unwrap();
    let cs = z(&[cols]);
    colsum(gpu, &x, rows, cols, &cs, false);
    let (att, y) = (z(&[bt.0, nh, bt.1, bt.1]), z(&[bt.0, bt.1, c]));
    attention_forward(gpu, &qkv, nh, &att, &y).unwrap();
    let (dpre, dqkv) = (z(&[bt.0, nh, bt.1, bt.1]), z(&[bt.0, bt.1, 3 * c]));
    attention_backward(gpu, &d_att_out, &qkv, &att, nh, &dpre, &dqkv).unwrap();
    // 40 rows of 204 classes (51 vec4s: lanes with six and seven), one padded
    let logits = t(&[40, 204]);
    let targets: Vec<u32> = (0..40)
        .map(|r| if r == 7 { u32::MAX } else { (r * 5) % 204 })
        .collect();
    let targets = Tensor::from_u32(gpu, "targets", &[40], &targets, Category::Activations).unwrap();
    let (losses, dlogits) = (z(&[40]), z(&[40, 204]));
    softmax_xent(gpu, &logits, &targets, &losses, Some(&dlogits), 0.05).unwrap();
    let read = |t: &Tensor| t.to_f32(gpu).unwrap();
    vec![
        ("layernorm out", read(&out)),
        ("layernorm rstd", read(&rstd)),
        ("layernorm dx", read(&dx)),
        ("layernorm dw", read(&dw)),
        ("layernorm db", read(&db)),
        ("gelu", read(&g)),
        ("gelu backward", read(&dg)),
        ("add", read(&sum)),
        ("accumulate", read(&acc)),
        ("relu backward", read(&relu)),
        ("reduce", read(&norms)),
        ("colsum", read(&cs)),
        ("attention out", read(&y)),
        ("attention dqkv", read(&dqkv)),
        ("softmax_xent losses", read(&losses)),
        ("softmax_xent dlogits", read(&dlogits)),
    ]
}

#[test]
fn the_texture_forms_give_the_buffer_forms_bits() {
    let gpu = Gpu::new(None).expect("an adapter");
    gpu.set_texture_reads(true);
    let mut textured = vec![];
    let profile = gpu
        .profile(wgtrain::gpu::ProfileClock::Wall, || {
            textured = outputs(&gpu);
            Ok(())
        })
        .unwrap();
    // the texture forms ran
    for kernel in [
        "layernorm_subgroup (textures)::forward[CLUSTERS=1]",
        "layernorm_subgroup (textures)::backward_input[CLUSTERS=1]",
        "layernorm (textures)::backward_params4",
        "elementwise (textures)::gelu_forward4",
        "elementwise (textures)::gelu_backward4",
        "reduce (textures)::partials4",
        "reduce (textures)::colsum4",
        "attention (textures)::split_qkv4",
        "attention (textures)::merge_qkv4",
        "softmax_xent_subgroup (textures)::forward_backward[CLUSTERS=1]",
        "attention_subgroup (textures)::softmax_backward[CLUSTERS=1]",
    ] {
        assert!(
            profile.iter().any(|k| k.kernel == kernel),
            "{kernel} in {profile:?}"
        );
    }
    gpu.set_texture_reads(false);
    let buffers = outputs(&gpu);
    for ((name, a), (_, b)) in textured.iter().zip(&buffers) {
        assert_eq!(a.len(), b.len(), "{name}");
        let differ = a
            .iter()
            .zip(b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(differ, 0, "{name}: {differ} of {} values differ", a.len());
        assert!(a.iter().any(|v| *v != 0.0), "{name}: all zeros");
    }
}

/// The row kernels in their GPU layout ([`wgtrain::gpu::ROW_CLUSTERS_GPU`] rows of 8 lanes each
/// per workgroup, the sums by shuffles) on lavapipe, against the layout lavapipe runs (one row
/// of 8 lanes per workgroup, subgroupAdd and subgroupMax, checked against f64 by the reference
/// tests). Row counts that leave the last workgroup's clusters partly empty (37, 40, 256 rows of
/// attention). Each lane adds its own columns in the same order in both layouts and only the
/// eight lanes' partials meet in another order, so a row's statistics differ by a few ulps:
/// within 1e-5 relative and 1e-6 absolute (values of order one; dlogits' scale 0.05).
#[test]
fn the_row_kernels_gpu_layout_agrees_with_the_cpu_layout() {
    use wgtrain::gpu::ROW_CLUSTERS_GPU;
    let gpu = Gpu::new(None).expect("an adapter");
    assert_eq!(gpu.row_clusters(), 1, "lavapipe runs a row per workgroup");
    let one = outputs(&gpu);
    gpu.set_row_clusters(ROW_CLUSTERS_GPU);
    let mut clustered = vec![];
    let profile = gpu
        .profile(wgtrain::gpu::ProfileClock::Wall, || {
            clustered = outputs(&gpu);
            Ok(())
        })
        .unwrap();
    let label = format!("[CLUSTERS={ROW_CLUSTERS_GPU}]");
    for kernel in [
        "layernorm_subgroup (textures)::forward",
        "layernorm_subgroup (textures)::backward_input",
        "attention_subgroup::softmax",
        "attention_subgroup (textures)::softmax_backward",
        "softmax_xent_subgroup (textures)::forward_backward",
    ] {
        let kernel = format!("{kernel}{label}");
        assert!(
            profile.iter().any(|k| k.kernel == kernel),
            "{kernel} in {profile:?}"
        );
    }
    let mut exact = 0;
    for ((name, a), (_, b)) in clustered.iter().zip(&one) {
        assert_eq!(a.len(), b.len(), "{name}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let tol = 1e-6 + 1e-5 * y.abs();
            assert!(
                (x - y).abs() <= tol,
                "{name}[{i}]: {x} in the GPU layout, {y} in the CPU one"
            );
            exact += usize::from(x.to_bits() == y.to_bits());
        }
        assert!(a.iter().any(|v| *v != 0.0), "{name}: all zeros");
    }
    assert!(
        exact > 0,
        "the layouts never agreed exactly: not the same math"
    );
}
