//! How much memory a device has: the figure a run's planned peak is checked against before
//! anything is allocated, so a model too large for the device is refused with both numbers
//! instead of dying in an allocation.
//!
//! wgpu has no query for it. On a CPU adapter (lavapipe, llvmpipe on GL, WARP), the host's
//! available memory, since that is what its buffers take; on a GPU on Vulkan, the largest
//! device-local heap (through wgpu-hal); `WGTRAIN_DEVICE_MEMORY` (e.g. `8GiB`) overrides both,
//! and names the figure on backends with neither (Metal, DX12, GL on a GPU).

/// Overrides the device memory figure, e.g. `WGTRAIN_DEVICE_MEMORY=8GiB`.
pub const MEMORY_ENV: &str = "WGTRAIN_DEVICE_MEMORY";

/// The memory of the device `adapter` opens, in bytes, and where the figure came from.
pub fn of_adapter(adapter: &wgpu::Adapter) -> Option<(u64, &'static str)> {
    let info = adapter.get_info();
    overridden().or_else(|| {
        // A CPU adapter's buffers are host memory; its heap figure is nominal (lavapipe reports
        // 2 GiB on any machine), so the host's figure is the one that holds.
        if info.device_type == wgpu::DeviceType::Cpu {
            available_host_memory().map(|m| (m, "host memory available"))
        } else {
            vulkan_heap(adapter).map(|h| (h, "largest device-local heap"))
        }
    })
}

/// The figure for a device wgtrain did not open itself ([`crate::Gpu::from_device`]).
pub fn of_device(info: &wgpu::AdapterInfo) -> Option<(u64, &'static str)> {
    overridden().or_else(|| {
        (info.device_type == wgpu::DeviceType::Cpu)
            .then(available_host_memory)
            .flatten()
            .map(|m| (m, "host memory available"))
    })
}

fn overridden() -> Option<(u64, &'static str)> {
    let v = std::env::var(MEMORY_ENV).ok()?;
    match parse_size(&v) {
        Ok(bytes) => Some((bytes, MEMORY_ENV)),
        Err(e) => {
            log::warn!("{MEMORY_ENV}: {e}; ignored");
            None
        }
    }
}

/// MemAvailable from /proc/meminfo (Linux); None elsewhere.
pub fn available_host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(any(windows, target_os = "linux", target_os = "android"))]
fn vulkan_heap(adapter: &wgpu::Adapter) -> Option<u64> {
    if adapter.get_info().backend != wgpu::Backend::Vulkan {
        return None;
    }
    // SAFETY: reads the physical device's memory properties, nothing else; the hal guard lives
    // only inside this function, while `adapter` is borrowed.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: the physical device belongs to this instance (both from the same hal adapter).
    let props =
        unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
    let count = (props.memory_heap_count as usize).min(props.memory_heaps.len());
    props.memory_heaps[..count]
        .iter()
        .filter(|h| h.flags.contains(ash::vk::MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .max()
}

#[cfg(not(any(windows, target_os = "linux", target_os = "android")))]
fn vulkan_heap(_adapter: &wgpu::Adapter) -> Option<u64> {
    None
}

/// Parses "512MiB", "2GiB", "300MB", "1000000" (bytes).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    Ok((value * mult) as u64)
}
