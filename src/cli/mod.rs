pub mod bench;
pub mod info;
pub mod plan;
pub mod sample;
pub mod train;
