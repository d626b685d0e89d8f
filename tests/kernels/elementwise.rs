use crate::common::*;
use crate::reference;
use wgtrain::ops::elementwise::*;
use wgtrain::rng::Rng;

// 1000 runs only the vec4 kernels; 7, 129 and 65537 both (vec4 head, scalar tail); 1 only the scalar one
const SIZES: [usize; 6] = [1, 7, 8, 129, 1000, 65_537];

#[test]
fn add_scale_accumulate_forward_and_backward() {
    let mut rng = Rng::new(10);
    for n in SIZES {
        let (x, y) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
        let (tx, ty, out) = (
            upload("x", &[n], &x),
            upload("y", &[n], &y),
            zeros("out", &[n]),
        );
        add(gpu(), &tx, &ty, &out);
        // f32 addition of two f32 values rounds once: exact up to half an ulp
        let want: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(a, b)| *a as f64 + *b as f64)
            .collect();
        assert_close("add", &read(&out), &want, 0.0, 6e-8);

        scale(gpu(), &tx, -2.5, &out);
        let want: Vec<f64> = x.iter().map(|a| -2.5 * *a as f64).collect();
        assert_close("scale", &read(&out), &want, 0.0, 6e-8);
        scale_backward(gpu(), &ty, -2.5, &out);
        let want: Vec<f64> = y.iter().map(|a| -2.5 * *a as f64).collect();
        assert_close("scale_backward", &read(&out), &want, 0.0, 6e-8);

        // out = -2.5 y; out += 0.5 x
        accumulate(gpu(), &tx, 0.5, &out);
        let want: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(a, b)| -2.5 * *b as f64 + 0.5 * *a as f64)
            .collect();
        assert_close("accumulate", &read(&out), &want, 1e-7, 1e-6);

        // add's backward sends dout to both inputs (accumulating)
        let (dx, dy) = (zeros("dx", &[n]), upload("dy", &[n], &y));
        add_backward(gpu(), &tx, &dx, &dy);
        assert_close("add_backward dx", &read(&dx), &to64(&x), 0.0, 0.0);
        let want: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(a, b)| *a as f64 + *b as f64)
            .collect();
        assert_close("add_backward dy", &read(&dy), &want, 0.0, 6e-8);
    }
}

/// Checks forward and backward of an activation against the f64 reference, and the reference
/// backward against central differences of the reference forward.
fn check_activation(
    name: &str,
    forward: fn(&wgtrain::Gpu, &wgtrain::Tensor, &wgtrain::Tensor),
    backward: fn(&wgtrain::Gpu, &wgtrain::Tensor, &wgtrain::Tensor, &wgtrain::Tensor),
    ref_forward: fn(&[f64]) -> Vec<f64>,
    ref_backward: fn(&[f64], &[f64]) -> Vec<f64>,
    tol: f64,
) {
    let mut rng = Rng::new(11);
    for n in SIZES {
        // include large magnitudes, and keep clear of the ReLU kink for finite differences
        let x: Vec<f32> = rng
            .uniform_vec(n, -6.0, 6.0)
            .into_iter()
            .map(|v| if v.abs() < 1e-3 { 0.5 } else { v })
            .collect();
        let dout = rand_vec(&mut rng, n);
        let (tx, tdout) = (upload("x", &[n], &x), upload("dout", &[n], &dout));
        let (out, dx) = (zeros("out", &[n]), zeros("dx", &[n]));
        forward(gpu(), &tx, &out);
        backward(gpu(), &tx, &tdout, &dx);
        let (x64, d64) = (to64(&x), to64(&dout));
        assert_close(
            &format!("{name} forward n={n}"),
            &read(&out),
            &ref_forward(&x64),
            tol,
            tol,
        );
        let dx_ref = ref_backward(&x64, &d64);
        assert_close(
            &format!("{name} backward n={n}"),
            &read(&dx),
            &dx_ref,
            tol,
            tol,
        );
        if n <= 1000 {
            // elementwise: d<f(x), dout>/dx_i = f'(x_i)·dout_i, one finite difference per element
            let h = 1e-6;
            let fd: Vec<f64> = (0..n)
                .map(|i| {
                    let f = |v: f64| ref_forward(&[v])[0] * d64[i];
                    (f(x64[i] + h) - f(x64[i] - h)) / (2.0 * h)
                })
                .collect();
            assert_close64(
                &format!("{name} reference backward vs finite differences"),
                &dx_ref,
                &fd,
                1e-8,
                1e-6,
            );
        }
    }
}

#[test]
fn relu_forward_and_backward() {
    check_activation(
        "relu",
        relu_forward,
        relu_backward,
        reference::relu,
        reference::relu_backward,
        0.0,
    );
}

#[test]
fn gelu_forward_and_backward() {
    // tanh and exp in f32 on the GPU: a few ulps of 1
    check_activation(
        "gelu",
        gelu_forward,
        gelu_backward,
        reference::gelu,
        reference::gelu_backward,
        2e-6,
    );
}

/// More than 65535 workgroups of 256 in one dispatch: the grid folds into 2-D.
#[test]
fn dispatches_past_65535_workgroups_fold_into_2d() {
    let n = 65_535 * 256 + 300;
    let x: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
    let (tx, out) = (upload("x", &[n], &x), zeros("out", &[n]));
    scale(gpu(), &tx, 2.0, &out);
    let got = read(&out);
    let bad = (0..n).find(|&i| got[i] != 2.0 * x[i]);
    assert_eq!(bad, None, "first wrong element");
}

#[test]
fn sign_maps_every_value_exactly() {
    let mut rng = Rng::new(72);
    // the vec4 kernel and the scalar tail; exact zeros (both signs) map to 0
    for n in [1, 6, 1003] {
        let mut x = rand_vec(&mut rng, n);
        x[0] = 0.0;
        if n > 2 {
            x[2] = -0.0;
        }
        let out = zeros("sign", &[n]);
        wgtrain::ops::elementwise::sign(gpu(), &upload("x", &[n], &x), &out);
        let want: Vec<f32> = x
            .iter()
            .map(|&v| if v == 0.0 { 0.0 } else { v.signum() })
            .collect();
        assert_eq!(read(&out), want, "n {n}");
    }
}

/// SwiGLU (f64): silu(g)·u.
fn swiglu64(g: f64, u: f64) -> f64 {
    g / (1.0 + (-g).exp()) * u
}

#[test]
fn swiglu_forward_and_backward_match_the_reference_and_finite_differences() {
    let mut rng = Rng::new(12);
    for n in SIZES {
        let gate = rng.uniform_vec(n, -8.0, 8.0);
        let (up, dout) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
        let (tg, tu, td) = (
            upload("gate", &[n], &gate),
            upload("up", &[n], &up),
            upload("dout", &[n], &dout),
        );
        let (out, scratch, dg, du) = (
            zeros("out", &[n]),
            zeros("scratch", &[n]),
            zeros("d_gate", &[n]),
            zeros("d_up", &[n]),
        );
        swiglu(gpu(), &tg, &tu, &out);
        swiglu_backward(gpu(), &tg, &tu, &td, &scratch, &dg, &du);
        let (g64, u64_, d64) = (to64(&gate), to64(&up), to64(&dout));
        let want: Vec<f64> = (0..n).map(|i| swiglu64(g64[i], u64_[i])).collect();
        // exp in f32 on the GPU and a few roundings: a few ulps of the largest values (~8)
        assert_close(&format!("swiglu n={n}"), &read(&out), &want, 4e-6, 4e-6);
        // the gradients, analytically and by central differences of Σ out·dout
        let h = 1e-6;
        let fd = |i: usize, gate: bool| {
            let f = |d: f64| {
                let (g, u) = if gate {
                    (g64[i] + d, u64_[i])
                } else {
                    (g64[i], u64_[i] + d)
                };
                swiglu64(g, u) * d64[i]
            };
            (f(h) - f(-h)) / (2.0 * h)
        };
        let dg_ref: Vec<f64> = (0..n)
            .map(|i| {
                let s = 1.0 / (1.0 + (-g64[i]).exp());
                d64[i] * u64_[i] * s * (1.0 + g64[i] * (1.0 - s))
            })
            .collect();
        let du_ref: Vec<f64> = (0..n).map(|i| d64[i] * swiglu64(g64[i], 1.0)).collect();
        if n <= 1000 {
            let fd_g: Vec<f64> = (0..n).map(|i| fd(i, true)).collect();
            let fd_u: Vec<f64> = (0..n).map(|i| fd(i, false)).collect();
            assert_close64("reference d_gate vs fd", &dg_ref, &fd_g, 1e-7, 1e-6);
            assert_close64("reference d_up vs fd", &du_ref, &fd_u, 1e-7, 1e-6);
        }
        assert_close(
            &format!("swiglu d_gate n={n}"),
            &read(&dg),
            &dg_ref,
            4e-6,
            4e-6,
        );
        assert_close(
            &format!("swiglu d_up n={n}"),
            &read(&du),
            &du_ref,
            4e-6,
            4e-6,
        );
    }
}
