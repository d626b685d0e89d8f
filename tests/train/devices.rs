//! Several devices in one process: each Gpu keeps its own matmul tuning, so two devices on one
//! adapter, one opened without subgroups, train side by side, and (every matmul kernel doing the
//! same operations in the same order) to the same bits.

use wgtrain::gpu::{DeviceOptions, OPTIONAL_FEATURES};
use wgtrain::ops::matmul_tune::{self, MatmulKernel};
use wgtrain::train::{ModelKind, TrainConfig, Trainer};
use wgtrain::Gpu;

#[test]
fn two_gpus_on_one_adapter_one_without_subgroups_train_side_by_side() {
    let full = Gpu::new(None).unwrap();
    let plain = Gpu::new_with(
        None,
        &DeviceOptions {
            features: OPTIONAL_FEATURES - wgpu::Features::SUBGROUP,
            limits: None,
        },
    )
    .unwrap();
    assert!(!plain.features().contains(wgpu::Features::SUBGROUP));
    assert_eq!(full.info().name, plain.info().name, "one adapter");
    assert_eq!(
        matmul_tune::tuning(&plain).kernel,
        MatmulKernel::Blocked,
        "a device without subgroups is never handed the subgroup kernel"
    );
    if matmul_tune::subgroups_usable(&full) {
        assert!(
            matches!(
                matmul_tune::tuning(&full).kernel,
                MatmulKernel::Subgroup { .. } | MatmulKernel::Texture { .. }
            ),
            "the device with subgroups keeps its own tuning"
        );
        assert_ne!(
            matmul_tune::adapter_key(&full),
            matmul_tune::adapter_key(&plain),
            "the disk cache tells the two apart"
        );
    }
    let mut c = TrainConfig::preset(ModelKind::Mlp, "digits");
    c.steps = 4;
    let mut a = Trainer::new(&full, c.clone()).unwrap();
    let mut b = Trainer::new(&plain, c).unwrap();
    for step in 0..4 {
        let la = a.train_step(true).unwrap().unwrap();
        let lb = b.train_step(true).unwrap().unwrap();
        assert_eq!(la.to_bits(), lb.to_bits(), "step {step}: {la} vs {lb}");
    }
    for (pa, pb) in a.model.params().iter().zip(b.model.params()) {
        assert_eq!(
            pa.value().to_f32(&full).unwrap(),
            pb.value().to_f32(&plain).unwrap(),
            "{}",
            pa.name
        );
    }
}
