//! Kernel timing harness for development (not a test): `cargo bench --bench kernels`.
//! Prints GFLOP/s of matmul in each layout on training-step shapes. The user-facing benchmark is
//! `wgtrain bench`.

use std::time::Instant;
use wgtrain::ops::matmul::{matmul, Layout, MatmulDims};
use wgtrain::rng::Rng;
use wgtrain::{Category, Gpu, Tensor};

fn main() {
    let gpu = Gpu::new(None).expect("an adapter");
    let mut rng = Rng::new(0);
    // WGTRAIN_SHAPES="m,n,k m,n,k ..." picks the shapes; these are W-GPT-S's and two squares
    let shapes: Vec<(usize, usize, usize)> = std::env::var("WGTRAIN_SHAPES")
        .unwrap_or_else(|_| {
            "768,384,128 768,128,128 768,512,128 768,128,512 768,256,128 256,256,256 1024,1024,1024"
                .into()
        })
        .split_whitespace()
        .map(|s| {
            let v: Vec<usize> = s.split(',').map(|x| x.parse().expect("m,n,k")).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    for (m, n, k) in shapes {
        for layout in [Layout::NN, Layout::NT, Layout::TN] {
            let d = MatmulDims::new(m, n, k, layout);
            let a = Tensor::from_f32(
                &gpu,
                "a",
                &[m * k],
                &rng.uniform_vec(m * k, -1.0, 1.0),
                Category::Workspace,
            )
            .unwrap();
            let b = Tensor::from_f32(
                &gpu,
                "b",
                &[k * n],
                &rng.uniform_vec(k * n, -1.0, 1.0),
                Category::Workspace,
            )
            .unwrap();
            let c = Tensor::zeros(&gpu, "c", &[m * n], Category::Workspace).unwrap();
            matmul(&gpu, d, &a, &b, None, &c, false);
            gpu.sync().unwrap();
            let reps = (2e9 / (2.0 * (m * n * k) as f64)).clamp(3.0, 200.0) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                matmul(&gpu, d, &a, &b, None, &c, false);
            }
            gpu.sync().unwrap();
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "matmul {layout:?} {m}x{n}x{k}: {:.3} ms, {:.2} GFLOP/s",
                s * 1e3,
                2.0 * (m * n * k) as f64 / s / 1e9
            );
        }
    }
}
