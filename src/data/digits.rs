//! The UCI 8x8 handwritten digits, embedded in the binary (see assets/README.md for attribution).
//! A fixed stratified 80/20 split: within each class, every fifth sample (in file order) is a test
//! sample. Pixels 0..16 are scaled to [0, 1].

use super::rows::Rows;
use crate::error::{Error, Result};
use std::io::Read;

const CSV_GZ: &[u8] = include_bytes!("../../assets/digits.csv.gz");
pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;

/// The digits as rows of 64 features in 10 classes.
pub fn load() -> Result<Rows> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::Data(format!("embedded digits: {e}")))?;
    let mut d = Rows {
        features: FEATURES,
        classes: CLASSES,
        train_x: vec![],
        train_y: vec![],
        test_x: vec![],
        test_y: vec![],
    };
    let mut seen = [0usize; CLASSES];
    for (line_no, line) in text.lines().enumerate() {
        let values: Vec<u32> = line
            .split(',')
            .map(|v| v.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Data(format!("embedded digits line {}: {e}", line_no + 1)))?;
        if values.len() != FEATURES + 1 || values[FEATURES] as usize >= CLASSES {
            return Err(Error::Data(format!(
                "embedded digits line {}: malformed",
                line_no + 1
            )));
        }
        let label = values[FEATURES];
        let pixels = values[..FEATURES].iter().map(|&p| p as f32 / 16.0);
        let k = &mut seen[label as usize];
        if *k % 5 == 4 {
            d.test_x.extend(pixels);
            d.test_y.push(label);
        } else {
            d.train_x.extend(pixels);
            d.train_y.push(label);
        }
        *k += 1;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_split_is_stratified_80_20() {
        let d = super::load().unwrap();
        assert_eq!(d.train_y.len() + d.test_y.len(), 1797);
        assert_eq!(d.train_x.len(), d.train_y.len() * 64);
        for c in 0..10 {
            let tr = d.train_y.iter().filter(|&&y| y == c).count() as f64;
            let te = d.test_y.iter().filter(|&&y| y == c).count() as f64;
            assert!(
                (te / (tr + te) - 0.2).abs() < 0.02,
                "class {c}: {tr} train, {te} test"
            );
        }
        assert!(d.train_x.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
}
