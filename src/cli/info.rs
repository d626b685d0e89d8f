//! `wgtrain info`: adapters, the chosen one, its features and key limits.

use anyhow::Result;
use serde_json::json;
use wgtrain::gpu::OPTIONAL_FEATURES;
use wgtrain::Gpu;

pub fn run(selector: Option<&str>, as_json: bool) -> Result<()> {
    let (adapters, chosen) = Gpu::list_adapters(selector)?;
    let chosen = chosen?;
    let gpu = Gpu::new(Some(&chosen.to_string()))?;
    let features: Vec<String> = gpu
        .features()
        .iter_names()
        .map(|(name, _)| name.to_string())
        .collect();
    let optional_missing: Vec<String> = (OPTIONAL_FEATURES - gpu.features())
        .iter_names()
        .map(|(name, _)| name.to_string())
        .collect();
    let l = gpu.limits();
    let limits = json!({
        "max_buffer_size": l.max_buffer_size,
        "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
        "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
        "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
        "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
        "min_uniform_buffer_offset_alignment": l.min_uniform_buffer_offset_alignment,
    });
    if as_json {
        let out = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "adapters": adapters,
            "chosen": chosen,
            "features": features,
            "optional_features_missing": optional_missing,
            "limits": limits,
            "memory_bytes": gpu.memory_capacity().map(|m| m.0),
            "memory_source": gpu.memory_capacity().map(|m| m.1),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("wgtrain {}", env!("CARGO_PKG_VERSION"));
    println!("adapters:");
    for a in &adapters {
        let mark = if a.index == chosen { "*" } else { " " };
        println!(" {mark} {a}");
    }
    println!("chosen: [{}] {}", chosen, adapters[chosen].name);
    match gpu.memory_capacity() {
        Some((bytes, source)) => println!(
            "memory: {:.2} GiB ({source})",
            bytes as f64 / (1u64 << 30) as f64
        ),
        None => println!(
            "memory: unknown on this backend (set {} to check runs against a figure)",
            wgtrain::gpu::capacity::MEMORY_ENV
        ),
    }
    println!(
        "features: {}",
        if features.is_empty() {
            "(none)".to_string()
        } else {
            features.join(", ")
        }
    );
    if !optional_missing.is_empty() {
        println!(
            "optional features not offered: {}",
            optional_missing.join(", ")
        );
    }
    println!("limits:");
    for (k, v) in limits.as_object().unwrap() {
        println!("  {k}: {v}");
    }
    Ok(())
}
