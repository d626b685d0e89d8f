//! Rotary position embeddings against the f64 reference (angles in f64; the kernel's come from
//! f64-computed tables rounded to f32), the backward (the inverse rotation) against central
//! differences of the reference, a partial rotation and a position offset (a KV cache's).

use crate::common::*;
use crate::reference;
use wgtrain::ops::rope::{rope, RopeTables};
use wgtrain::rng::Rng;

#[test]
fn rope_rotates_as_the_reference_and_its_backward_is_the_inverse_rotation() {
    let mut rng = Rng::new(33);
    // (batch, seq, heads, dim, rot, offset)
    for &(b, t, h, d, rot, offset) in &[
        (1, 1, 1, 2, 2, 0),
        (2, 5, 3, 8, 8, 0),
        (1, 7, 2, 16, 8, 3),
        (2, 64, 9, 64, 64, 0),
    ] {
        let base = 10_000.0;
        let tables = RopeTables::new(gpu(), base, rot, offset + t).unwrap();
        let n = b * t * h * d;
        let x = rand_vec(&mut rng, n);
        let dout = rand_vec(&mut rng, n);
        let (tx, td) = (
            upload("x", &[b, t, h, d], &x),
            upload("dout", &[b, t, h, d], &dout),
        );
        let (out, dx) = (zeros("out", &[b, t, h, d]), zeros("dx", &[b, t, h, d]));
        rope(gpu(), &tx, &tables, t, h, d, offset, false, &out);
        rope(gpu(), &td, &tables, t, h, d, offset, true, &dx);
        let (x64, d64) = (to64(&x), to64(&dout));
        let want = reference::rope(&x64, t, h, d, rot, base, offset, 1.0);
        let dx_ref = reference::rope(&d64, t, h, d, rot, base, offset, -1.0);
        let what = format!("({b}, {t}, {h}, {d}) rot {rot} offset {offset}");
        // two products and a sum in f32, the tables' cos and sin rounded once: a few ulps
        assert_close(&format!("{what} out"), &read(&out), &want, 1e-6, 1e-5);
        assert_close(&format!("{what} dx"), &read(&dx), &dx_ref, 1e-6, 1e-5);
        // the passed-through dimensions are the input's bits
        for row in 0..n / d {
            for c in rot..d {
                assert_eq!(
                    read(&out)[row * d + c],
                    x[row * d + c],
                    "{what}: passed through"
                );
            }
        }
        if n <= 1000 {
            // the reference backward against central differences of Σ rope(x)·dout
            let f = |v: &[f64]| dot(&reference::rope(v, t, h, d, rot, base, offset, 1.0), &d64);
            let fd = finite_diff(&x64, 1e-6, f);
            assert_close64(
                &format!("{what} reference dx vs fd"),
                &dx_ref,
                &fd,
                1e-7,
                1e-6,
            );
        }
    }
}
