//! Device identity and device errors: a tensor knows its device, an op given tensors of two
//! devices panics naming both, and what the device refuses (a buffer over its limits, an invalid
//! dispatch) comes back as a typed error, never a panic.

use wgtrain::gpu::{Category, DeviceOptions, Gpu};
use wgtrain::ops::elementwise::{add, scale};
use wgtrain::{Error, Tensor};

fn own_gpu() -> Gpu {
    Gpu::new(None).expect("an adapter")
}

#[test]
fn tensors_carry_their_device_and_two_devices_differ() {
    let (a, b) = (own_gpu(), own_gpu());
    assert_ne!(a.id(), b.id());
    let x = Tensor::zeros(&a, "x", &[4], Category::Activations).unwrap();
    assert_eq!(x.device(), a.id());
}

#[test]
#[should_panic(expected = "lives on device #")]
fn an_op_given_tensors_of_two_devices_panics_naming_both() {
    let (a, b) = (own_gpu(), own_gpu());
    let x = Tensor::from_f32(&a, "x on a", &[8], &[1.0; 8], Category::Activations).unwrap();
    let y = Tensor::from_f32(&b, "y on b", &[8], &[1.0; 8], Category::Activations).unwrap();
    let out = Tensor::zeros(&a, "out", &[8], Category::Activations).unwrap();
    add(&a, &x, &y, &out);
}

#[test]
fn the_device_mismatch_message_names_the_tensor_and_both_devices() {
    let (a, b) = (own_gpu(), own_gpu());
    let y = Tensor::from_f32(&b, "y on b", &[8], &[1.0; 8], Category::Activations).unwrap();
    let out = Tensor::zeros(&a, "out", &[8], Category::Activations).unwrap();
    let msg = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scale(&a, &y, 2.0, &out)))
        .expect_err("mixing devices panics");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("\"y on b\""), "{msg}");
    assert!(msg.contains(&b.id().to_string()), "{msg}");
    assert!(msg.contains(&a.id().to_string()), "{msg}");
}

/// A device opened with a 1 MiB buffer limit.
fn small_gpu() -> Gpu {
    let probe = own_gpu();
    let mut limits = probe.limits().clone();
    limits.max_buffer_size = 1 << 20;
    limits.max_storage_buffer_binding_size = 1 << 20;
    let options = DeviceOptions {
        limits: Some(limits),
        ..DeviceOptions::default()
    };
    Gpu::new_with(None, &options).expect("a device with lowered limits")
}

#[test]
fn an_allocation_over_the_device_limit_is_a_typed_error() {
    let gpu = small_gpu();
    assert_eq!(gpu.limits().max_buffer_size, 1 << 20);
    // Through a tensor: the limit check names the tensor before the device is asked.
    match Tensor::empty(
        &gpu,
        "too big",
        &[1 << 19],
        wgtrain::DType::F32,
        Category::Activations,
    ) {
        Err(Error::TensorTooLarge { name, bytes, .. }) => {
            assert_eq!((name.as_str(), bytes), ("too big", 2 << 20));
        }
        other => panic!("expected TensorTooLarge, got {:?}", other.map(|_| ())),
    }
    // Straight to the pool: the device itself refuses, inside an error scope.
    let err = gpu
        .pool()
        .alloc("raw", 2 << 20, Category::Workspace)
        .err()
        .expect("the device refuses a buffer over max_buffer_size");
    match &err {
        Error::OutOfMemory { tensor, .. } => assert_eq!(tensor, "raw"),
        Error::Device(m) => assert!(m.contains("\"raw\""), "{m}"),
        other => panic!("expected a device error, got {other:?}"),
    }
    assert_eq!(gpu.memory().live.total(), 0, "nothing was charged");
    // The device still works.
    let x = Tensor::from_f32(&gpu, "x", &[4], &[1.0, 2.0, 3.0, 4.0], Category::Workspace).unwrap();
    assert_eq!(x.to_f32(&gpu).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn an_invalid_dispatch_is_a_typed_error_and_the_device_recovers() {
    let gpu = own_gpu();
    // (buffer forms: a texture form would read its input from a copy)
    gpu.set_texture_reads(false);
    let x = Tensor::from_f32(&gpu, "x", &[16], &[1.0; 16], Category::Activations).unwrap();
    // The same buffer bound as the input (read-only) and the output (read-write) of one
    // dispatch: WebGPU forbids it, so the batch is refused at submit.
    scale(&gpu, &x, 2.0, &x);
    match gpu.sync() {
        Err(Error::Device(m)) => assert!(!m.is_empty()),
        other => panic!("expected Error::Device, got {other:?}"),
    }
    let y = Tensor::zeros(&gpu, "y", &[16], Category::Activations).unwrap();
    scale(&gpu, &x, 2.0, &y);
    assert_eq!(y.to_f32(&gpu).unwrap(), vec![2.0; 16]);
}
