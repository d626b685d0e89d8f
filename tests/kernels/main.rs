//! Kernel tests, headless on lavapipe (or whatever adapter WGTRAIN_ADAPTER picks): every kernel's
//! forward against a float64 CPU reference, every backward against the reference's analytic
//! backward, and that analytic backward against central finite differences in f64.
//! One test binary, so the crate links once and pipelines are compiled once per process.

mod common;
mod reference;

mod attention;
mod cast;
mod devices;
mod elementwise;
mod embedding;
mod half;
mod kashin;
mod layernorm;
mod lora;
mod matmul;
mod optim;
mod pad;
mod qmatmul;
mod reduce;
mod rmsnorm;
mod rope;
mod runtime;
mod softmax_xent;
mod texture_forms;
