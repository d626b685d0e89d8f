//! Data sets: feature rows (the embedded UCI digits; random rows for the benchmark), the
//! synthetic addition task, any text file as bytes, and fine-tuning records (JSONL).

pub mod addition;
pub mod digits;
pub mod jsonl;
pub mod rows;
pub mod text;
