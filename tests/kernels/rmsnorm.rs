//! RMSNorm (Llama's) against its f64 reference, whose gradients are checked by central finite
//! differences; the weight's gradient written, accumulated, or left alone for a frozen gain.

use crate::common::*;
use crate::reference;
use wgtrain::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use wgtrain::rng::Rng;

const EPS: f32 = 1e-5;

#[test]
fn forward_and_backward_match_the_reference_and_finite_differences() {
    let mut rng = Rng::new(32);
    for &(rows, cols) in &[
        (1, 1),
        (1, 7),
        (7, 17),
        (17, 33),
        (5, 129),
        (3, 300),
        (2, 576),
    ] {
        // an offset and a larger scale, as real activations have
        let x: Vec<f32> = rng.uniform_vec(rows * cols, -2.0, 3.0);
        let w = rng.uniform_vec(cols, 0.5, 1.5);
        let dout = rand_vec(&mut rng, rows * cols);
        let (x64, w64, d64) = (to64(&x), to64(&w), to64(&dout));
        let eps = EPS as f64;
        let (out_ref, rstd_ref) = reference::rmsnorm(&x64, &w64, rows, cols, eps);
        let (dx_ref, dw_ref) = reference::rmsnorm_backward(&d64, &x64, &w64, rows, cols, eps);
        if rows * cols <= 600 {
            // the reference's gradients against central differences of Σ out·dout
            let f_x = |v: &[f64]| dot(&reference::rmsnorm(v, &w64, rows, cols, eps).0, &d64);
            let f_w = |v: &[f64]| dot(&reference::rmsnorm(&x64, v, rows, cols, eps).0, &d64);
            let fd_x = finite_diff(&x64, 1e-5, f_x);
            assert_close64("reference dx vs fd", &dx_ref, &fd_x, 1e-7, 1e-6);
            let fd_w = finite_diff(&w64, 1e-5, f_w);
            assert_close64("reference dw vs fd", &dw_ref, &fd_w, 1e-7, 1e-6);
        }

        let (tx, tw) = (upload("x", &[rows, cols], &x), upload("w", &[cols], &w));
        let (out, rstd) = (zeros("out", &[rows, cols]), zeros("rstd", &[rows]));
        rmsnorm_forward(gpu(), &tx, &tw, EPS, &out, &rstd);
        let what = format!("rows {rows} cols {cols}");
        // f32 sums of C squares (up to 576) against f64: a few ulps of each sum
        assert_close(&format!("{what} out"), &read(&out), &out_ref, 1e-5, 1e-5);
        assert_close(&format!("{what} rstd"), &read(&rstd), &rstd_ref, 1e-5, 1e-5);

        let tdout = upload("dout", &[rows, cols], &dout);
        let (dx, dw) = (zeros("dx", &[rows, cols]), zeros("dw", &[cols]));
        rmsnorm_backward(gpu(), &tdout, &tx, &tw, &rstd, &dx, &dw, Some(false));
        assert_close(&format!("{what} dx"), &read(&dx), &dx_ref, 1e-5, 1e-4);
        // dw sums R products in f32: its error grows with the rows
        let tol = 1e-5 * rows as f64;
        assert_close(&format!("{what} dw"), &read(&dw), &dw_ref, tol, 1e-5);
        // accumulated: twice the gradient
        rmsnorm_backward(gpu(), &tdout, &tx, &tw, &rstd, &dx, &dw, Some(true));
        let dw2: Vec<f64> = dw_ref.iter().map(|v| 2.0 * v).collect();
        assert_close(
            &format!("{what} dw accumulated"),
            &read(&dw),
            &dw2,
            2.0 * tol,
            1e-5,
        );
        // a frozen gain: dx still, dw untouched
        let marker = vec![7.0f32; cols];
        let dw = upload("dw", &[cols], &marker);
        rmsnorm_backward(gpu(), &tdout, &tx, &tw, &rstd, &dx, &dw, None);
        assert_eq!(read(&dw), marker, "{what}: a frozen gain's gradient");
        assert_close(
            &format!("{what} dx (frozen gain)"),
            &read(&dx),
            &dx_ref,
            1e-5,
            1e-4,
        );
    }
}
