use crate::common::*;
use crate::reference;
use wgtrain::ops::layernorm::{layernorm_backward, layernorm_forward};
use wgtrain::rng::Rng;

const EPS: f32 = 1e-5;

#[test]
fn forward_matches_reference() {
    let mut rng = Rng::new(30);
    // multiples of 4 columns take the subgroup kernels where the adapter has them
    for &(rows, cols) in &[
        (1, 1),
        (7, 7),
        (17, 33),
        (3, 129),
        (65, 65),
        (2, 1000),
        (5, 4),
        (9, 36), // on CPU adapters: two workgroups walking five rows and four
        (3, 256),
    ] {
        // an offset mean and a larger scale, as real activations have
        let x: Vec<f32> = rng.uniform_vec(rows * cols, -3.0, 5.0);
        let (w, b) = (rand_vec(&mut rng, cols), rand_vec(&mut rng, cols));
        let (tx, tw, tb) = (
            upload("x", &[rows, cols], &x),
            upload("w", &[cols], &w),
            upload("b", &[cols], &b),
        );
        let (out, mean, rstd) = (
            zeros("out", &[rows, cols]),
            zeros("mean", &[rows]),
            zeros("rstd", &[rows]),
        );
        layernorm_forward(gpu(), &tx, &tw, &tb, EPS, &out, &mean, &rstd);
        let r = reference::layernorm(&to64(&x), &to64(&w), &to64(&b), rows, cols, EPS as f64);
        let what = format!("rows {rows} cols {cols}");
        assert_close(&format!("{what} out"), &read(&out), &r.out, 1e-5, 1e-5);
        assert_close(&format!("{what} mean"), &read(&mean), &r.mean, 1e-6, 1e-6);
        // cols = 1: variance 0, rstd = 1/sqrt(eps) ≈ 316
        assert_close(&format!("{what} rstd"), &read(&rstd), &r.rstd, 1e-5, 1e-5);
    }
}

#[test]
fn backward_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(31);
    for &(rows, cols) in &[
        (1, 7),
        (7, 17),
        (17, 33),
        (5, 129),
        (3, 300),
        (4, 8),
        (9, 36), // on CPU adapters: two workgroups walking five rows and four
    ] {
        let x: Vec<f32> = rng.uniform_vec(rows * cols, -2.0, 3.0);
        let w = rng.uniform_vec(cols, 0.5, 1.5);
        let b = rand_vec(&mut rng, cols);
        let dout = rand_vec(&mut rng, rows * cols);
        let (x64, w64, d64) = (to64(&x), to64(&w), to64(&dout));
        let (dx_ref, dw_ref, db_ref) =
            reference::layernorm_backward(&d64, &x64, &w64, rows, cols, EPS as f64);

        if rows * cols <= 600 {
            let b64 = to64(&b);
            let f_x = |v: &[f64]| {
                dot(
                    &reference::layernorm(v, &w64, &b64, rows, cols, EPS as f64).out,
                    &d64,
                )
            };
            let f_w = |v: &[f64]| {
                dot(
                    &reference::layernorm(&x64, v, &b64, rows, cols, EPS as f64).out,
                    &d64,
                )
            };
            let f_b = |v: &[f64]| {
                dot(
                    &reference::layernorm(&x64, &w64, v, rows, cols, EPS as f64).out,
                    &d64,
                )
            };
            assert_close64(
                "reference dx vs fd",
                &dx_ref,
                &finite_diff(&x64, 1e-5, f_x),
                1e-7,
                1e-6,
            );
            assert_close64(
                "reference dw vs fd",
                &dw_ref,
                &finite_diff(&w64, 1e-5, f_w),
                1e-7,
                1e-6,
            );
            assert_close64(
                "reference db vs fd",
                &db_ref,
                &finite_diff(&b64, 1e-5, f_b),
                1e-7,
                1e-6,
            );
        }

        let (tx, tw, tb) = (
            upload("x", &[rows, cols], &x),
            upload("w", &[cols], &w),
            upload("b", &[cols], &b),
        );
        let (out, mean, rstd) = (
            zeros("out", &[rows, cols]),
            zeros("mean", &[rows]),
            zeros("rstd", &[rows]),
        );
        layernorm_forward(gpu(), &tx, &tw, &tb, EPS, &out, &mean, &rstd);
        let tdout = upload("dout", &[rows, cols], &dout);
        let (dx, dw, db) = (
            zeros("dx", &[rows, cols]),
            zeros("dw", &[cols]),
            zeros("db", &[cols]),
        );
        layernorm_backward(
            gpu(),
            &tdout,
            &tx,
            &tw,
            &mean,
            &rstd,
            &dx,
            &dw,
            &db,
            Some(false),
        );
        let what = format!("rows {rows} cols {cols}");
        assert_close(&format!("{what} dx"), &read(&dx), &dx_ref, 1e-5, 1e-4);
        assert_close(
            &format!("{what} dw"),
            &read(&dw),
            &dw_ref,
            1e-5 * rows as f64,
            1e-5,
        );
        assert_close(
            &format!("{what} db"),
            &read(&db),
            &db_ref,
            1e-6 * rows as f64,
            1e-6,
        );

        layernorm_backward(
            gpu(),
            &tdout,
            &tx,
            &tw,
            &mean,
            &rstd,
            &dx,
            &dw,
            &db,
            Some(true),
        );
        let db2: Vec<f64> = db_ref.iter().map(|v| 2.0 * v).collect();
        assert_close(
            &format!("{what} db accumulated"),
            &read(&db),
            &db2,
            2e-6 * rows as f64,
            1e-6,
        );
    }
}
