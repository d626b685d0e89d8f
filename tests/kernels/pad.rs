//! Padding a batch of matrices and cropping it back (`ops::pad`, what ragged matmuls run on):
//! pure moves, so the GPU's values must equal a host copy bit for bit.

use crate::common::*;
use wgtrain::ops::pad::{crop, pad, Padding};
use wgtrain::rng::Rng;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn pad_writes_zeros_past_the_edges_and_crop_takes_the_corner_back() {
    let mut rng = Rng::new(5);
    // (batch, rows, cols, padded rows, padded cols): both sides ragged, one side, a row (a bias),
    // and a layout wider than a multiple of 4 needs
    let cases = [
        (1, 1, 1, 4, 4),
        (3, 5, 7, 8, 8),
        (2, 8, 10, 8, 12),
        (1, 9, 4, 12, 4),
        (1, 1, 10, 1, 12),
        (2, 3, 3, 5, 9),
    ];
    for (batch, rows, cols, prows, pcols) in cases {
        let what = format!("batch {batch}, {rows}x{cols} in {prows}x{pcols}");
        let p = Padding {
            batch,
            rows,
            cols,
            prows,
            pcols,
        };
        let x = rand_vec(&mut rng, batch * rows * cols);
        let mut want = vec![0.0f32; batch * prows * pcols];
        for b in 0..batch {
            for r in 0..rows {
                for c in 0..cols {
                    want[(b * prows + r) * pcols + c] = x[(b * rows + r) * cols + c];
                }
            }
        }
        let tx = upload("x", &[batch, rows, cols], &x);
        // the padded buffer starts dirty: pad must write every element, zeros included
        let tp = upload("padded", &[batch, prows, pcols], &vec![7.0; want.len()]);
        pad(gpu(), p, &tx, &tp);
        assert_eq!(bits(&read(&tp)), bits(&want), "{what}: pad");

        let back = upload("back", &[batch, rows, cols], &vec![9.0; x.len()]);
        crop(gpu(), p, &tp, &back, false);
        assert_eq!(bits(&read(&back)), bits(&x), "{what}: crop");

        let start = rand_vec(&mut rng, x.len());
        let acc = upload("acc", &[batch, rows, cols], &start);
        crop(gpu(), p, &tp, &acc, true);
        let sum: Vec<f32> = start.iter().zip(&x).map(|(s, v)| s + v).collect();
        assert_eq!(bits(&read(&acc)), bits(&sum), "{what}: crop, accumulating");
    }
}
