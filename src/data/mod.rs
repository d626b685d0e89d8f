//! Data sets: feature rows (the embedded UCI digits; random rows for the benchmark), the
//! synthetic addition task, and any text file as bytes.

pub mod addition;
pub mod digits;
pub mod rows;
pub mod text;
