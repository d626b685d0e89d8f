pub mod info;
pub mod sample;
pub mod train;
