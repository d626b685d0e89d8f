//! Data sets: the embedded UCI digits, the synthetic addition task, and any text file as bytes.

pub mod addition;
pub mod digits;
pub mod text;
