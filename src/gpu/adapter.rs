//! Adapter discovery and choice.
//!
//! Every backend is enumerated (or those named by `WGTRAIN_BACKEND`); the user picks one with
//! `--adapter <index|name substring>` or `WGTRAIN_ADAPTER`, else the ranking below decides:
//! a discrete GPU, then an integrated one, before a virtual, other or CPU adapter; and for the same
//! kind, Vulkan/Metal/DX12 before GL.

use crate::error::{Error, Result};
use serde::Serialize;

/// Environment variable naming the adapter (index or case-insensitive name substring).
pub const ADAPTER_ENV: &str = "WGTRAIN_ADAPTER";
/// Environment variable restricting the backends searched: vulkan|metal|dx12|gl (comma-separated).
pub const BACKEND_ENV: &str = "WGTRAIN_BACKEND";

/// What `wgtrain info` and error messages show of one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterSummary {
    pub fn from_info(index: usize, info: &wgpu::AdapterInfo) -> Self {
        AdapterSummary {
            index,
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        }
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {} ({}, {}, driver: {} {})",
            self.index, self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

/// Parses `WGTRAIN_BACKEND`'s value ("vulkan", "metal,dx12", …) into wgpu backends.
pub fn parse_backends(value: &str) -> Result<wgpu::Backends> {
    let mut backends = wgpu::Backends::empty();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        backends |= match name.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            _ => return Err(Error::UnknownBackend(name.to_string())),
        };
    }
    if backends.is_empty() {
        return Err(Error::UnknownBackend(value.to_string()));
    }
    Ok(backends)
}

/// The backends to search: `WGTRAIN_BACKEND` when set, else all.
pub fn backends_from_env() -> Result<wgpu::Backends> {
    match std::env::var(BACKEND_ENV) {
        Ok(v) if !v.trim().is_empty() => parse_backends(&v),
        _ => Ok(wgpu::Backends::all()),
    }
}

/// A new instance over `backends`, without a display (the trainer is headless).
pub fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter on the given backends, in the order wgpu reports them (the indices users type).
pub fn enumerate(instance: &wgpu::Instance, backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Lower is preferred.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, api)
}

/// Index into `infos` of the adapter to use: the one `selector` names (an index, or a
/// case-insensitive substring of the name), else the best ranked.
pub fn choose(
    infos: &[wgpu::AdapterInfo],
    selector: Option<&str>,
    backends: &str,
) -> Result<usize> {
    if infos.is_empty() {
        return Err(Error::NoAdapter {
            backends: backends.to_string(),
        });
    }
    let listing = || {
        infos
            .iter()
            .enumerate()
            .map(|(i, info)| format!("  {}", AdapterSummary::from_info(i, info)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(sel) => {
            if let Ok(index) = sel.parse::<usize>() {
                return if index < infos.len() {
                    Ok(index)
                } else {
                    Err(Error::AdapterNotFound {
                        selector: sel.to_string(),
                        listing: listing(),
                    })
                };
            }
            let needle = sel.to_lowercase();
            infos
                .iter()
                .enumerate()
                .filter(|(_, info)| info.name.to_lowercase().contains(&needle))
                .min_by_key(|(i, info)| (rank(info), *i))
                .map(|(i, _)| i)
                .ok_or_else(|| Error::AdapterNotFound {
                    selector: sel.to_string(),
                    listing: listing(),
                })
        }
        None => Ok(infos
            .iter()
            .enumerate()
            .min_by_key(|(i, info)| (rank(info), *i))
            .map(|(i, _)| i)
            .expect("infos is not empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        name: &str,
        device_type: wgpu::DeviceType,
        backend: wgpu::Backend,
    ) -> wgpu::AdapterInfo {
        wgpu::AdapterInfo {
            name: name.into(),
            ..wgpu::AdapterInfo::new(device_type, backend)
        }
    }

    #[test]
    fn ranking_prefers_discrete_then_integrated_then_cpu_and_native_apis_over_gl() {
        use wgpu::{Backend as B, DeviceType as D};
        let infos = vec![
            info("llvmpipe", D::Cpu, B::Vulkan),
            info("Intel Iris (GL)", D::IntegratedGpu, B::Gl),
            info("Intel Iris", D::IntegratedGpu, B::Vulkan),
            info("RTX 4090", D::DiscreteGpu, B::Vulkan),
        ];
        assert_eq!(choose(&infos, None, "").unwrap(), 3);
        assert_eq!(choose(&infos[..3], None, "").unwrap(), 2);
        assert_eq!(choose(&infos[..2], None, "").unwrap(), 1);
        assert_eq!(choose(&infos, Some("iris"), "").unwrap(), 2);
        assert_eq!(choose(&infos, Some("0"), "").unwrap(), 0);
    }

    #[test]
    fn a_selector_that_matches_nothing_lists_the_adapters() {
        let infos = vec![info(
            "llvmpipe",
            wgpu::DeviceType::Cpu,
            wgpu::Backend::Vulkan,
        )];
        for sel in ["radeon", "7"] {
            let err = choose(&infos, Some(sel), "").unwrap_err().to_string();
            assert!(err.contains("no adapter matches"), "{err}");
            assert!(err.contains("[0] llvmpipe (vulkan, Cpu"), "{err}");
        }
        let err = choose(&[], None, "").unwrap_err().to_string();
        assert!(err.contains("apt-get install mesa-vulkan-drivers"), "{err}");
    }

    #[test]
    fn backends_parse_by_name() {
        assert_eq!(parse_backends("vulkan").unwrap(), wgpu::Backends::VULKAN);
        assert_eq!(
            parse_backends("metal, dx12").unwrap(),
            wgpu::Backends::METAL | wgpu::Backends::DX12
        );
        assert!(parse_backends("cuda").is_err());
    }
}
