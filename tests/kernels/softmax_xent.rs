use crate::common::*;
use crate::reference;
use wgtrain::ops::softmax_xent::{softmax_xent, PAD};
use wgtrain::rng::Rng;
use wgtrain::{Category, Tensor};

fn targets(rng: &mut Rng, rows: usize, vocab: usize) -> Vec<u32> {
    (0..rows)
        .map(|r| {
            if r % 5 == 3 {
                PAD
            } else {
                rng.below(vocab as u64) as u32
            }
        })
        .collect()
}

#[test]
fn loss_and_dlogits_match_reference_with_padding_and_large_logits() {
    let mut rng = Rng::new(20);
    for &(rows, vocab, spread) in &[
        (1, 1, 1.0),
        (7, 7, 4.0),
        (17, 65, 4.0),
        (9, 129, 1000.0),
        (33, 300, 30.0),
        // vocabularies of vec4s (the subgroup kernel where the adapter has one): fewer vec4s
        // than lanes, and large logits
        (5, 4, 1.0),
        (9, 256, 1000.0),
    ] {
        let logits = rng.uniform_vec(rows * vocab, -spread, spread);
        let tg = targets(&mut rng, rows, vocab);
        let scale = 1.0 / tg.iter().filter(|&&t| t != PAD).count().max(1) as f32;
        let tl = upload("logits", &[rows, vocab], &logits);
        let tt = Tensor::from_u32(gpu(), "targets", &[rows], &tg, Category::Activations).unwrap();
        let (losses, dlogits) = (zeros("losses", &[rows]), zeros("dlogits", &[rows, vocab]));
        softmax_xent(gpu(), &tl, &tt, &losses, Some(&dlogits), scale).unwrap();
        let (want_loss, want_d) = reference::softmax_xent(&to64(&logits), &tg, vocab, scale as f64);
        let what = format!("rows {rows} vocab {vocab} spread {spread}");
        // the loss is a difference of O(spread) terms rounded in f32
        assert_close(
            &format!("{what} loss"),
            &read(&losses),
            &want_loss,
            2e-6 * spread.max(1.0) as f64,
            1e-6,
        );
        assert_close(
            &format!("{what} dlogits"),
            &read(&dlogits),
            &want_d,
            1e-7,
            1e-5,
        );
        assert!(
            read(&losses).iter().all(|l| l.is_finite()),
            "{what}: stable for large logits"
        );

        // without dlogits: the same losses
        let losses2 = zeros("losses2", &[rows]);
        softmax_xent(gpu(), &tl, &tt, &losses2, None, scale).unwrap();
        assert_eq!(read(&losses), read(&losses2));
    }
}

#[test]
fn reference_dlogits_match_finite_differences_of_the_reference_loss() {
    let mut rng = Rng::new(21);
    let (rows, vocab) = (6, 11);
    let logits = to64(&rng.uniform_vec(rows * vocab, -3.0, 3.0));
    let tg = targets(&mut rng, rows, vocab);
    let (_, d) = reference::softmax_xent(&logits, &tg, vocab, 1.0);
    let fd = finite_diff(&logits, 1e-6, |x| {
        reference::softmax_xent(x, &tg, vocab, 1.0).0.iter().sum()
    });
    assert_close64("dlogits", &d, &fd, 1e-8, 1e-6);
}
