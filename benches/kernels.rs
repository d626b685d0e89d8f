//! Kernel timing harness for development (not a test): `cargo bench --bench kernels`.
//! Prints GFLOP/s of matmul in each layout on training-step shapes (`WGTRAIN_SHAPES`), and with
//! `WGTRAIN_GELU=1` the GELU epilogues against the matmul and the elementwise GELU. The
//! user-facing benchmark is `wgtrain bench`.

use std::time::Instant;
use wgtrain::ops::elementwise::{gelu_backward, gelu_forward};
use wgtrain::ops::matmul::{matmul, matmul_gelu, matmul_gelu_grad, Layout, MatmulDims};
use wgtrain::rng::Rng;
use wgtrain::{Category, Gpu, Tensor};

fn main() {
    let gpu = Gpu::new(None).expect("an adapter");
    let mut rng = Rng::new(0);
    // WGTRAIN_SHAPES="m,n,k b,m,n,k ..." picks the shapes (b: a batch of products); these are
    // W-GPT-S's linear layers, its attention products (48 = batch 12 x 4 heads, context 64, head
    // size 32) and two squares
    let shapes: Vec<(usize, usize, usize, usize)> = std::env::var("WGTRAIN_SHAPES")
        .unwrap_or_else(|_| {
            "768,384,128 768,128,128 768,512,128 768,128,512 768,256,128 48,64,64,32 48,64,32,64 \
             256,256,256 1024,1024,1024"
                .into()
        })
        .split_whitespace()
        .map(|s| {
            let v: Vec<usize> = s
                .split(',')
                .map(|x| x.parse().expect("[b,]m,n,k"))
                .collect();
            match v[..] {
                [m, n, k] => (1, m, n, k),
                [b, m, n, k] => (b, m, n, k),
                _ => panic!("a shape is m,n,k or b,m,n,k"),
            }
        })
        .collect();
    // WGTRAIN_GELU=1 also times the GELU epilogues against the matmul and the elementwise GELU
    let gelu = std::env::var_os("WGTRAIN_GELU").is_some();
    for (batch, m, n, k) in shapes {
        for layout in [Layout::NN, Layout::NT, Layout::TN] {
            let d = MatmulDims::batched(batch, m, n, k, layout);
            let a = Tensor::from_f32(
                &gpu,
                "a",
                &[batch * m * k],
                &rng.uniform_vec(batch * m * k, -1.0, 1.0),
                Category::Workspace,
            )
            .unwrap();
            let b = Tensor::from_f32(
                &gpu,
                "b",
                &[batch * k * n],
                &rng.uniform_vec(batch * k * n, -1.0, 1.0),
                Category::Workspace,
            )
            .unwrap();
            let c = Tensor::zeros(&gpu, "c", &[batch * m * n], Category::Workspace).unwrap();
            matmul(&gpu, d, &a, &b, None, &c, false);
            gpu.sync().unwrap();
            let flops = 2.0 * (batch * m * n * k) as f64;
            let reps = (2e9 / flops).clamp(3.0, 200.0) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                matmul(&gpu, d, &a, &b, None, &c, false);
            }
            gpu.sync().unwrap();
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "matmul {layout:?} {batch}x{m}x{n}x{k}: {:.3} ms, {:.2} GFLOP/s",
                s * 1e3,
                flops / s / 1e9
            );
            if gelu {
                time_gelu(&gpu, d, [&a, &b, &c], reps);
            }
        }
    }
}

/// ms of the GELU epilogues (`matmul_gelu`, `matmul_gelu_grad`) against the matmul and the
/// elementwise GELU kernel one after the other, in turns, `reps` calls in a submit each.
fn time_gelu(gpu: &Gpu, d: MatmulDims, [a, b, c]: [&Tensor; 3], reps: usize) {
    let t2 = Tensor::zeros(gpu, "t2", c.shape(), Category::Workspace).unwrap();
    let t3 = Tensor::zeros(gpu, "t3", c.shape(), Category::Workspace).unwrap();
    let time = |f: &dyn Fn()| {
        f();
        gpu.sync().unwrap();
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        gpu.sync().unwrap();
        t.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    let what = format!("{:?} {}x{}x{}x{}", d.layout, d.batch, d.m, d.n, d.k);
    for round in 0..3 {
        let fused = time(&|| matmul_gelu(gpu, d, a, b, None, c, &t2));
        let unfused = time(&|| {
            matmul(gpu, d, a, b, None, c, false);
            gelu_forward(gpu, c, &t2);
        });
        let fused_grad = time(&|| matmul_gelu_grad(gpu, d, a, b, &t3, c));
        let unfused_grad = time(&|| {
            matmul(gpu, d, a, b, None, &t2, false);
            gelu_backward(gpu, &t3, &t2, c);
        });
        println!(
            "  gelu {what} round {round}: forward fused {fused:.3} ms, unfused {unfused:.3}; \
             backward fused {fused_grad:.3}, unfused {unfused_grad:.3}"
        );
    }
}
