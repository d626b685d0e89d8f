pub mod bench;
pub mod info;
pub mod optimize;
pub mod plan;
pub mod plot;
pub mod quantize;
pub mod sample;
pub mod train;
