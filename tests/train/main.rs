//! Training end to end: whole-model gradients against a float64 CPU model, learning, determinism,
//! resume, checkpoints, and the command line's handling of bad input.

#[path = "../kernels/reference.rs"]
#[allow(dead_code)]
mod reference;

mod cli;
mod gradients;
mod memory;
mod planner;
mod second_order;
mod training;

use std::sync::OnceLock;
use wgtrain::Gpu;

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::new(None).unwrap_or_else(|e| panic!("training tests need an adapter: {e}"))
    })
}
