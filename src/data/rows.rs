//! A classification data set of feature rows: inputs (N, features) in f32 and class labels,
//! split into a training and a test part. The embedded digits are one; `Rows::random` makes
//! the benchmark's.

use crate::rng::Rng;

pub struct Rows {
    pub features: usize,
    pub classes: usize,
    /// (N_train, features)
    pub train_x: Vec<f32>,
    pub train_y: Vec<u32>,
    /// (N_test, features)
    pub test_x: Vec<f32>,
    pub test_y: Vec<u32>,
}

impl Rows {
    /// `n_train` and `n_test` rows of uniform [0, 1) features and uniform labels, from `seed`.
    pub fn random(
        features: usize,
        classes: usize,
        n_train: usize,
        n_test: usize,
        seed: u64,
    ) -> Rows {
        let mut rng = Rng::new(seed);
        let mut draw = |n: usize| {
            let x = rng.uniform_vec(n * features, 0.0, 1.0);
            let y = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
            (x, y)
        };
        let (train_x, train_y) = draw(n_train);
        let (test_x, test_y) = draw(n_test);
        Rows {
            features,
            classes,
            train_x,
            train_y,
            test_x,
            test_y,
        }
    }
}
