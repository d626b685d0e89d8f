//! The quantized matmul against the host's dequantization and an f64 product, on shapes whose
//! width no group size divides.

use crate::common::{assert_close, gpu, rand_vec, read, to64, upload, zeros};
use crate::reference;
use wgtrain::ops::qmatmul::{dequantize, qmatmul, QuantWeight};
use wgtrain::quant::{quantize, Method};
use wgtrain::rng::Rng;

#[test]
fn qmatmul_decodes_every_format_as_the_host_does() {
    let mut rng = Rng::new(21);
    // K a multiple of 4 takes main4 (eight rows an invocation; 9 and 13 rows leave a partial
    // block), other K the scalar main
    for (m, n, k) in [(5, 7, 45), (1, 3, 1), (9, 16, 64), (4, 5, 130), (13, 6, 40)] {
        let x = rand_vec(&mut rng, m * k);
        let w: Vec<f32> = rand_vec(&mut rng, n * k).iter().map(|v| v * 0.1).collect();
        for method in [
            Method::Int8,
            Method::Int { bits: 4, group: 32 },
            Method::Int { bits: 4, group: 7 },
            Method::Int { bits: 3, group: 32 },
            Method::Int { bits: 3, group: 7 },
            Method::Int { bits: 2, group: 5 },
            Method::Nf4 { block: 64 },
            Method::Nf4 { block: 5 },
        ] {
            let q = quantize(method, &w, n, k).unwrap();
            let qw = QuantWeight::upload(gpu(), "w", &q).unwrap();
            let tx = upload("x", &[m, k], &x);
            let ty = zeros("y", &[m, n]);
            qmatmul(gpu(), &tx, &qw, None, false, &ty);
            // the decoded weights a frozen quantized weight's backward multiplies by: the
            // host's decode bit for bit (the same products of a code and its scale in f32)
            let tw = zeros("w", &[n, k]);
            dequantize(gpu(), &qw, &tw);
            assert_eq!(read(&tw), q.dequantize(), "{method:?} ({n}, {k}) decoded");
            let want = reference::matmul(&to64(&x), &to64(&q.dequantize()), m, n, k, false, true);
            // f32 products summed over k in order against f64: K ulps of the sum at most
            let tol = 1e-6 * k as f64;
            assert_close(
                &format!("{method:?} ({m}, {n}, {k})"),
                &read(&ty),
                &want,
                tol,
                tol,
            );
            // with a bias, then a ReLU
            let b = rand_vec(&mut rng, n);
            let tb = upload("b", &[n], &b);
            qmatmul(gpu(), &tx, &qw, Some(&tb), true, &ty);
            let want: Vec<f64> = want
                .iter()
                .enumerate()
                .map(|(i, v)| (v + b[i % n] as f64).max(0.0))
                .collect();
            assert_close(
                &format!("{method:?} + bias, relu"),
                &read(&ty),
                &want,
                tol,
                tol,
            );
        }
    }
}
