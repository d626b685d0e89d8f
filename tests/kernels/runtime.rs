//! The runtime under the kernels: recorder batching, the pool's accounting and reuse, limits,
//! ordering of uploads, and devices owned by the application.

use crate::common::*;
use wgtrain::gpu::{Category, Gpu, ProfileClock};
use wgtrain::ops::elementwise::{add, scale};
use wgtrain::{DType, Error, Tensor};

fn own_gpu() -> Gpu {
    Gpu::new(None).expect("an adapter")
}

/// The dispatches a profile counts for `kernel` (panicking, with the profile, when it has none).
fn dispatches_of(profile: &[wgtrain::gpu::KernelTime], kernel: &str) -> usize {
    profile
        .iter()
        .find(|k| k.kernel == kernel)
        .unwrap_or_else(|| panic!("{kernel} in {profile:?}"))
        .dispatches
}

#[test]
fn many_dispatches_then_one_readback_is_one_submit() {
    let gpu = own_gpu();
    // 32 values: each scale is one (vec4) dispatch
    let x = Tensor::from_f32(&gpu, "x", &[32], &[1.0; 32], Category::Activations).unwrap();
    let y = Tensor::zeros(&gpu, "y", &[32], Category::Activations).unwrap();
    for _ in 0..50 {
        scale(&gpu, &x, 2.0, &y);
        scale(&gpu, &y, 0.5, &x);
    }
    assert_eq!(
        gpu.stats().submits,
        0,
        "nothing is submitted before a sync point"
    );
    assert_eq!(x.to_f32(&gpu).unwrap(), vec![1.0; 32]);
    let stats = gpu.stats();
    assert_eq!(stats.dispatches, 100);
    assert_eq!(
        stats.submits, 1,
        "100 dispatches, a clear and a readback copy in one submit"
    );
    assert_eq!(
        stats.pipelines, 1,
        "one cached pipeline for the one entry point"
    );
}

#[test]
fn a_profile_times_every_dispatch_by_kernel_and_leaves_results_alone() {
    let gpu = own_gpu();
    // buffer forms, so that no copy into a texture runs between two dispatches and every submit
    // is a dispatch's own (the texture forms' copies: the next test)
    gpu.set_texture_reads(false);
    let mut clocks = vec![ProfileClock::Wall];
    if gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        clocks.push(ProfileClock::Timestamps);
    }
    for clock in clocks {
        // 34 values: each scale is a vec4 dispatch (32 values) and a scalar one (the last 2)
        let x = Tensor::from_f32(&gpu, "x", &[34], &[1.0; 34], Category::Activations).unwrap();
        let y = Tensor::zeros(&gpu, "y", &[34], Category::Activations).unwrap();
        let z = Tensor::zeros(&gpu, "z", &[34], Category::Activations).unwrap();
        gpu.sync().unwrap();
        let submits0 = gpu.stats().submits;
        let profile = gpu
            .profile(clock, || {
                for _ in 0..3 {
                    scale(&gpu, &x, 2.0, &y);
                    scale(&gpu, &y, 0.5, &x);
                    gpu.flush().unwrap(); // work that submits as it goes is profiled whole
                }
                add(&gpu, &x, &y, &z);
                Ok(())
            })
            .unwrap();
        if clock == ProfileClock::Wall {
            assert_eq!(
                gpu.stats().submits - submits0,
                14,
                "{clock:?}: every dispatch a submit of its own"
            );
        }
        assert_eq!(x.to_f32(&gpu).unwrap(), vec![1.0; 34], "{clock:?}");
        assert_eq!(z.to_f32(&gpu).unwrap(), vec![3.0; 34], "{clock:?}");
        let count = |name: &str| dispatches_of(&profile, name);
        assert_eq!(count("elementwise::scale4"), 6);
        assert_eq!(count("elementwise::scale"), 6);
        assert_eq!(count("elementwise::add4"), 1);
        assert_eq!(count("elementwise::add"), 1);
        assert_eq!(profile.len(), 4, "{profile:?}");
        assert!(profile.iter().all(|k| k.ms >= 0.0));
        assert!(
            profile.windows(2).all(|w| w[0].ms >= w[1].ms),
            "largest first"
        );
        // profiling is over: the next work is recorded as usual, one submit for all of it
        let submits0 = gpu.stats().submits;
        scale(&gpu, &x, 2.0, &y);
        scale(&gpu, &y, 1.0, &z);
        assert_eq!(z.to_f32(&gpu).unwrap(), vec![2.0; 34]);
        assert_eq!(gpu.stats().submits - submits0, 1, "{clock:?}");
    }
}

/// Under the wall clock the copies into operand textures before a texture form's dispatch are
/// timed on their own, as transfers, and the dispatches under the texture form's name.
#[test]
fn a_profile_times_the_copies_into_textures_as_transfers() {
    let gpu = own_gpu();
    gpu.set_texture_reads(true);
    // 2048 vec4s: past the size below which inputs stay in their buffers
    let n = 8192;
    let x = Tensor::from_f32(&gpu, "x", &[n], &vec![1.0; n], Category::Activations).unwrap();
    let y = Tensor::zeros(&gpu, "y", &[n], Category::Activations).unwrap();
    let z = Tensor::zeros(&gpu, "z", &[n], Category::Activations).unwrap();
    gpu.sync().unwrap();
    let profile = gpu
        .profile(ProfileClock::Wall, || {
            scale(&gpu, &x, 2.0, &y);
            add(&gpu, &x, &y, &z);
            Ok(())
        })
        .unwrap();
    let count = |name: &str| dispatches_of(&profile, name);
    assert_eq!(count("elementwise (textures)::scale4"), 1);
    assert_eq!(count("elementwise (textures)::add4"), 1);
    assert!(count(wgtrain::gpu::TRANSFERS) >= 2, "{profile:?}");
    assert_eq!(z.to_f32(&gpu).unwrap(), vec![3.0; n]);
}

#[test]
fn an_upload_after_recorded_work_lands_in_order() {
    let gpu = own_gpu();
    let x = Tensor::from_f32(&gpu, "x", &[4], &[1.0; 4], Category::Activations).unwrap();
    let a = Tensor::zeros(&gpu, "a", &[4], Category::Activations).unwrap();
    let b = Tensor::zeros(&gpu, "b", &[4], Category::Activations).unwrap();
    scale(&gpu, &x, 3.0, &a); // reads x = 1
    x.write_f32(&gpu, &[10.0; 4]); // recorded after the scale
    scale(&gpu, &x, 3.0, &b); // reads x = 10
    assert_eq!(a.to_f32(&gpu).unwrap(), vec![3.0; 4]);
    assert_eq!(b.to_f32(&gpu).unwrap(), vec![30.0; 4]);
}

#[test]
fn the_pool_charges_categories_tracks_peaks_and_reuses_freed_buffers() {
    let gpu = own_gpu();
    let m0 = gpu.memory();
    assert_eq!(m0.live.total(), 0);
    let p = Tensor::zeros(&gpu, "w", &[1000], Category::Params).unwrap();
    let g = Tensor::zeros(&gpu, "dw", &[1000], Category::Grads).unwrap();
    {
        let _act = Tensor::zeros(&gpu, "act", &[5000], Category::Activations).unwrap();
        let m = gpu.memory();
        assert_eq!(m.live.get(Category::Params), 4000);
        assert_eq!(m.live.get(Category::Grads), 4000);
        assert_eq!(m.live.get(Category::Activations), 20_000);
        assert_eq!(m.live.get(Category::OptimizerState), 0);
        assert_eq!(m.peak_total, 28_000);
        assert_eq!(m.allocations, 3);
    }
    let m = gpu.memory();
    assert_eq!(m.live.get(Category::Activations), 0);
    assert_eq!(m.peak.get(Category::Activations), 20_000, "the peak stays");
    assert!(m.cached >= 20_000, "the freed buffer is cached: {m:?}");
    // the same size again comes from the cache, charged to its new category
    let ws = Tensor::zeros(&gpu, "ws", &[5000], Category::Workspace).unwrap();
    let m = gpu.memory();
    assert_eq!(m.allocations, 3, "no new device buffer");
    assert_eq!(m.reuses, 1);
    assert_eq!(m.live.get(Category::Workspace), 20_000);
    assert_eq!(m.cached, 0);
    assert!(m.held_live >= m.live.total());
    drop((p, g, ws));
    assert_eq!(gpu.memory().live.total(), 0);
    gpu.pool().trim();
    assert_eq!(gpu.memory().cached, 0);
}

#[test]
fn a_tensor_beyond_the_binding_limit_is_refused_by_name() {
    let gpu = gpu();
    let limit = gpu.limits().max_storage_buffer_binding_size;
    let numel = (limit / 4 + 1) as usize;
    let err = Tensor::empty(
        gpu,
        "huge activations",
        &[numel],
        DType::F32,
        Category::Activations,
    )
    .unwrap_err();
    assert!(matches!(err, Error::TensorTooLarge { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("huge activations") && msg.contains(&limit.to_string()),
        "{msg}"
    );
}

/// An application that already has a device (say, it renders with wgpu) trains on it, while
/// another Gpu lives beside it.
#[test]
fn a_gpu_wraps_an_application_owned_device_beside_another() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("a device");
    let app_gpu = Gpu::from_device(device.clone(), queue);
    let other = gpu();
    let x = Tensor::from_f32(&app_gpu, "x", &[3], &[1.0, 2.0, 3.0], Category::Activations).unwrap();
    let y = Tensor::zeros(&app_gpu, "y", &[3], Category::Activations).unwrap();
    add(&app_gpu, &x, &x, &y);
    let x2 = Tensor::from_f32(other, "x", &[3], &[1.0, 2.0, 3.0], Category::Activations).unwrap();
    let y2 = zeros("y", &[3]);
    add(other, &x2, &x2, &y2);
    assert_eq!(y.to_f32(&app_gpu).unwrap(), vec![2.0, 4.0, 6.0]);
    assert_eq!(read(&y2), vec![2.0, 4.0, 6.0]);
    assert_eq!(app_gpu.info().name, adapter.get_info().name);
}

#[test]
fn gpu_time_is_measured_with_timestamps_where_offered() {
    use wgtrain::ops::matmul::{matmul, Layout, MatmulDims};
    let gpu = own_gpu();
    let a = Tensor::from_f32(&gpu, "a", &[64, 64], &[0.5; 64 * 64], Category::Workspace).unwrap();
    let c = Tensor::zeros(&gpu, "c", &[64, 64], Category::Workspace).unwrap();
    let d = MatmulDims::new(64, 64, 64, Layout::NN);
    let start = std::time::Instant::now();
    let ms = gpu
        .gpu_time_ms(|| matmul(&gpu, d, &a, &a, None, &c, false))
        .unwrap();
    let wall = start.elapsed().as_secs_f64() * 1e3;
    match ms {
        Some(ms) => assert!(ms > 0.0 && ms <= wall, "GPU {ms} ms within wall {wall} ms"),
        None => eprintln!("skipped: the adapter offers no TIMESTAMP_QUERY"),
    }
    // the work ran: 64 × 0.5 × 0.5
    assert!(c.to_f32(&gpu).unwrap().iter().all(|&v| v == 16.0));
}
