use crate::common::*;
use crate::reference;
use wgtrain::ops::attention::{attention_backward, attention_forward, Heads};
use wgtrain::rng::Rng;

const CASES: [(usize, usize, usize, usize); 9] = [
    // (B, T, C, NH); head sizes that are multiples of 4 move heads a vec4 at a time, 6 does not;
    // T a multiple of 4 runs the softmax rows on a subgroup where the adapter has one (T = 36:
    // 9 vec4s, so the first lane takes two)
    (1, 4, 4, 1),
    (2, 8, 16, 2),
    (1, 36, 8, 2),
    (1, 1, 4, 1),
    (2, 9, 32, 4),
    (2, 7, 12, 3),
    (1, 17, 8, 2),
    (2, 33, 16, 4),
    (1, 65, 6, 1),
];

#[test]
fn forward_matches_reference() {
    let mut rng = Rng::new(50);
    for (b, t, c, nh) in CASES {
        let qkv = rng.uniform_vec(b * t * 3 * c, -2.0, 2.0);
        let tq = upload("qkv", &[b, t, 3 * c], &qkv);
        let (att, out) = (zeros("att", &[b, nh, t, t]), zeros("out", &[b, t, c]));
        attention_forward(gpu(), &tq, nh, &att, &out).unwrap();
        let (out_ref, att_ref) = reference::attention(&to64(&qkv), b, t, c, nh);
        let what = format!("B {b} T {t} C {c} NH {nh}");
        assert_close(&format!("{what} att"), &read(&att), &att_ref, 1e-6, 1e-5);
        assert_close(&format!("{what} out"), &read(&out), &out_ref, 1e-5, 1e-5);
    }
}

#[test]
fn backward_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(51);
    for (b, t, c, nh) in CASES {
        let qkv = rng.uniform_vec(b * t * 3 * c, -2.0, 2.0);
        let dout = rand_vec(&mut rng, b * t * c);
        let (q64, d64) = (to64(&qkv), to64(&dout));
        let dqkv_ref = reference::attention_backward(&q64, &d64, b, t, c, nh);
        if q64.len() <= 1000 {
            let fd = finite_diff(&q64, 1e-5, |x| {
                dot(&reference::attention(x, b, t, c, nh).0, &d64)
            });
            assert_close64("reference dqkv vs fd", &dqkv_ref, &fd, 1e-8, 1e-6);
        }
        let tq = upload("qkv", &[b, t, 3 * c], &qkv);
        let (att, out) = (zeros("att", &[b, nh, t, t]), zeros("out", &[b, t, c]));
        attention_forward(gpu(), &tq, nh, &att, &out).unwrap();
        let tdout = upload("dout", &[b, t, c], &dout);
        let (dpre, dqkv) = (zeros("dpre", &[b, nh, t, t]), zeros("dqkv", &[b, t, 3 * c]));
        attention_backward(gpu(), &tdout, &tq, &att, nh, &dpre, &dqkv).unwrap();
        let what = format!("B {b} T {t} C {c} NH {nh}");
        assert_close(&format!("{what} dqkv"), &read(&dqkv), &dqkv_ref, 1e-5, 1e-4);
    }
}

/// Grouped-query attention: (B, T, C, NH, KH), KH key/value heads each serving NH/KH query
/// heads (1: multi-query), head sizes with and without vec4 moves.
const GQA_CASES: [(usize, usize, usize, usize, usize); 5] = [
    (1, 5, 8, 2, 1),
    (2, 9, 24, 6, 2),
    (1, 8, 12, 3, 1),
    (2, 7, 32, 4, 2),
    (1, 12, 18, 3, 3),
];

#[test]
fn grouped_query_attention_matches_reference_and_finite_differences() {
    let mut rng = Rng::new(52);
    for (b, t, c, nh, kh) in GQA_CASES {
        let heads = Heads { query: nh, kv: kh };
        let width = heads.qkv_width(c);
        let qkv = rng.uniform_vec(b * t * width, -2.0, 2.0);
        let dout = rand_vec(&mut rng, b * t * c);
        let (q64, d64) = (to64(&qkv), to64(&dout));
        let (out_ref, att_ref) = reference::attention_gqa(&q64, b, t, c, nh, kh);
        let dqkv_ref = reference::attention_gqa_backward(&q64, &d64, b, t, c, nh, kh);
        if q64.len() <= 1200 {
            let fd = finite_diff(&q64, 1e-5, |x| {
                dot(&reference::attention_gqa(x, b, t, c, nh, kh).0, &d64)
            });
            assert_close64("reference dqkv vs fd", &dqkv_ref, &fd, 1e-8, 1e-6);
        }
        let tq = upload("qkv", &[b, t, width], &qkv);
        let (att, out) = (zeros("att", &[b, nh, t, t]), zeros("out", &[b, t, c]));
        attention_forward(gpu(), &tq, heads, &att, &out).unwrap();
        let what = format!("B {b} T {t} C {c} NH {nh} KH {kh}");
        assert_close(&format!("{what} att"), &read(&att), &att_ref, 1e-6, 1e-5);
        assert_close(&format!("{what} out"), &read(&out), &out_ref, 1e-5, 1e-5);
        let tdout = upload("dout", &[b, t, c], &dout);
        let (dpre, dqkv) = (zeros("dpre", &[b, nh, t, t]), zeros("dqkv", &[b, t, width]));
        attention_backward(gpu(), &tdout, &tq, &att, heads, &dpre, &dqkv).unwrap();
        assert_close(&format!("{what} dqkv"), &read(&dqkv), &dqkv_ref, 1e-5, 1e-4);
    }
}

#[test]
fn cached_attention_equals_the_last_rows_of_full_causal_attention() {
    use wgtrain::ops::attention::cached_attention;
    let mut rng = Rng::new(53);
    // (T, C, NH, KH, n new rows): prefill (n = T), one decoded token, a chunk; a head of 6
    for (t, c, nh, kh, n) in [
        (7, 16, 4, 2, 7),
        (9, 24, 6, 2, 1),
        (12, 18, 3, 1, 4),
        (5, 8, 2, 2, 2),
    ] {
        let heads = Heads { query: nh, kv: kh };
        let width = heads.qkv_width(c);
        let kc = (width - c) / 2;
        let qkv = rng.uniform_vec(t * width, -2.0, 2.0);
        let (full, _) = reference::attention_gqa(&to64(&qkv), 1, t, c, nh, kh);
        let pos = t - n;
        // the cache: every position's keys and values, and rows past them never read
        let capacity = t + 3;
        let mut kcache = rng.uniform_vec(capacity * kc, -9.0, 9.0);
        let mut vcache = rng.uniform_vec(capacity * kc, -9.0, 9.0);
        for r in 0..t {
            let row = &qkv[r * width..(r + 1) * width];
            kcache[r * kc..(r + 1) * kc].copy_from_slice(&row[c..c + kc]);
            vcache[r * kc..(r + 1) * kc].copy_from_slice(&row[c + kc..]);
        }
        let q = upload("q", &[n, width], &qkv[pos * width..]);
        let (k, v) = (
            upload("k", &[capacity, kc], &kcache),
            upload("v", &[capacity, kc], &vcache),
        );
        let y = zeros("y", &[n, c]);
        cached_attention(gpu(), &q, &k, &v, heads, pos, &y);
        let what = format!("T {t} C {c} NH {nh} KH {kh} n {n}");
        assert_close(&what, &read(&y), &full[pos * c..], 1e-5, 1e-5);
    }
}

/// Fused attention (no (B, NH, T, T) scores stored: each row's log-sum-exp instead, the
/// backward recomputing the scores) against the same f64 reference, multi-head and
/// grouped-query, with head sizes of 6 and 8 and a T of 65.
#[test]
fn fused_attention_matches_the_reference_forward_and_backward() {
    use wgtrain::ops::attention::{attention_fused_backward, attention_fused_forward};
    let mut rng = Rng::new(54);
    for (b, t, c, nh, kh) in [
        (2, 9, 16, 2, 2),
        (1, 65, 6, 1, 1),
        (2, 7, 32, 4, 2),
        (1, 12, 18, 3, 1),
    ] {
        let heads = Heads { query: nh, kv: kh };
        let width = heads.qkv_width(c);
        let qkv = rng.uniform_vec(b * t * width, -2.0, 2.0);
        let dout = rand_vec(&mut rng, b * t * c);
        let (q64, d64) = (to64(&qkv), to64(&dout));
        let (out_ref, _) = reference::attention_gqa(&q64, b, t, c, nh, kh);
        let dqkv_ref = reference::attention_gqa_backward(&q64, &d64, b, t, c, nh, kh);
        let tq = upload("qkv", &[b, t, width], &qkv);
        let (y, lse) = (zeros("y", &[b, t, c]), zeros("lse", &[b, nh, t]));
        attention_fused_forward(gpu(), &tq, heads, &y, &lse);
        let what = format!("B {b} T {t} C {c} NH {nh} KH {kh}");
        assert_close(&format!("{what} out"), &read(&y), &out_ref, 1e-5, 1e-5);
        let tdout = upload("dout", &[b, t, c], &dout);
        let dqkv = zeros("dqkv", &[b, t, width]);
        attention_fused_backward(gpu(), &tdout, &tq, &y, &lse, heads, &dqkv).unwrap();
        assert_close(&format!("{what} dqkv"), &read(&dqkv), &dqkv_ref, 1e-5, 1e-4);
    }
}
