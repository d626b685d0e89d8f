use crate::common::*;
use crate::reference;
use wgtrain::ops::embedding::{embedding_backward, embedding_forward, EmbeddingIndex};
use wgtrain::rng::Rng;

#[test]
fn forward_and_backward_match_reference_with_repeated_and_unused_rows() {
    let mut rng = Rng::new(40);
    for &(rows, vocab, cols) in &[
        (1, 1, 1),
        (7, 3, 17),
        (33, 65, 7),
        (129, 10, 33),
        (300, 257, 5),
    ] {
        let idx: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u64) as u32).collect();
        let table = rand_vec(&mut rng, vocab * cols);
        let dout = rand_vec(&mut rng, rows * cols);
        let index = EmbeddingIndex::new(gpu(), "tokens", &idx, vocab).unwrap();
        let ttable = upload("table", &[vocab, cols], &table);
        let out = zeros("out", &[rows, cols]);
        embedding_forward(gpu(), &index, &ttable, &out);
        let what = format!("rows {rows} vocab {vocab} cols {cols}");
        // a gather copies exactly
        assert_close(
            &format!("{what} forward"),
            &read(&out),
            &reference::embedding(&idx, &to64(&table), cols),
            0.0,
            0.0,
        );

        let d64 = to64(&dout);
        let dtable_ref = reference::embedding_backward(&idx, &d64, vocab, cols);
        if rows * cols <= 1000 {
            let fd = finite_diff(&to64(&table), 1e-3, |t| {
                dot(&reference::embedding(&idx, t, cols), &d64)
            });
            assert_close64("reference dtable vs fd", &dtable_ref, &fd, 1e-9, 1e-9);
        }
        let (tdout, dtable) = (
            upload("dout", &[rows, cols], &dout),
            zeros("dtable", &[vocab, cols]),
        );
        embedding_backward(gpu(), &index, &tdout, &dtable, false);
        assert_close(
            &format!("{what} backward"),
            &read(&dtable),
            &dtable_ref,
            1e-6,
            1e-6,
        );
        embedding_backward(gpu(), &index, &tdout, &dtable, true);
        let twice: Vec<f64> = dtable_ref.iter().map(|v| 2.0 * v).collect();
        assert_close(
            &format!("{what} backward accumulated"),
            &read(&dtable),
            &twice,
            2e-6,
            1e-6,
        );
    }
}

#[test]
fn an_index_out_of_range_is_an_error_naming_it() {
    let err = EmbeddingIndex::new(gpu(), "tokens", &[1, 2, 9], 5)
        .err()
        .expect("index 9 ≥ 5");
    let msg = err.to_string();
    assert!(
        msg.contains("tokens") && msg.contains("index 9") && msg.contains("position 2"),
        "{msg}"
    );
}
