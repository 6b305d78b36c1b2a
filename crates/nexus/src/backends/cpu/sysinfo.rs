//! The CPU device's live properties, read from the OS (Linux procfs/sysfs;
//! elsewhere only what `std` knows).

use std::fs;

use serde_json::{json, Value};

/// One cache level as sysfs describes it.
struct Cache {
    level: u32,
    kind: String,
    size: u64,
    line: Option<u64>,
    shared_cpus: Option<u32>,
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// "48K" / "2048K" / "32M" -> bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1024),
        'M' | 'm' => (&s[..s.len() - 1], 1024 * 1024),
        'G' | 'g' => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

fn caches() -> Vec<Cache> {
    let mut out = Vec::new();
    for i in 0..16 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let Some(level) = read(&format!("{base}/level")).and_then(|l| l.parse().ok()) else {
            break;
        };
        let kind = read(&format!("{base}/type")).unwrap_or_default();
        let Some(size) = read(&format!("{base}/size")).and_then(|s| parse_size(&s)) else {
            continue;
        };
        let line = read(&format!("{base}/coherency_line_size")).and_then(|s| s.parse().ok());
        let shared_cpus = read(&format!("{base}/shared_cpu_list")).map(|l| count_cpu_list(&l));
        out.push(Cache {
            level,
            kind,
            size,
            line,
            shared_cpus,
        });
    }
    out
}

/// "0-3,8" -> 5
fn count_cpu_list(list: &str) -> u32 {
    list.split(',')
        .filter_map(|part| {
            let mut ends = part.trim().splitn(2, '-');
            let a: u32 = ends.next()?.trim().parse().ok()?;
            let b: u32 = ends
                .next()
                .map(|b| b.trim().parse().ok())
                .unwrap_or(Some(a))?;
            Some(b.saturating_sub(a) + 1)
        })
        .sum()
}

fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn vendor_name(cpuinfo: &str) -> String {
    if let Some(v) = cpuinfo_field(cpuinfo, "vendor_id") {
        return match v.as_str() {
            "GenuineIntel" => "Intel".into(),
            "AuthenticAMD" => "AMD".into(),
            other => other.into(),
        };
    }
    match cpuinfo_field(cpuinfo, "CPU implementer").as_deref() {
        Some("0x41") => "Arm".into(),
        Some("0x61") => "Apple".into(),
        Some("0x51") => "Qualcomm".into(),
        Some("0x48") => "HiSilicon".into(),
        Some("0xc0") => "Ampere".into(),
        Some(other) => format!("implementer {other}"),
        None => "Unknown".into(),
    }
}

fn physical_cores(cpuinfo: &str) -> Option<usize> {
    let mut pairs = std::collections::BTreeSet::new();
    let mut phys = None;
    for line in cpuinfo.lines() {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => phys = Some(v.trim().to_string()),
                "core id" => {
                    pairs.insert((phys.clone(), v.trim().to_string()));
                }
                _ => {}
            }
        }
    }
    (!pairs.is_empty()).then_some(pairs.len())
}

fn memory_bytes() -> Option<u64> {
    let meminfo = read("/proc/meminfo")?;
    let kb: u64 = cpuinfo_field(&meminfo, "MemTotal")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The CPU device's live property tree.
pub fn cpu_properties(threads: usize) -> Value {
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let arch = std::env::consts::ARCH;
    let name = cpuinfo_field(&cpuinfo, "model name")
        .or_else(|| cpuinfo_field(&cpuinfo, "Model"))
        .or_else(|| cpuinfo_field(&cpuinfo, "Hardware"))
        .unwrap_or_else(|| format!("{arch} CPU"));
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cores = physical_cores(&cpuinfo).unwrap_or(logical);
    let clock = cpuinfo_field(&cpuinfo, "cpu MHz")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|f| f.round() as i64);

    let caches = caches();
    let cache_size = |level: u32| -> Option<u64> {
        caches
            .iter()
            .find(|c| c.level == level && c.kind != "Instruction")
            .map(|c| c.size)
    };
    let mut memory_types = Vec::new();
    for level in 1..=3u32 {
        if let Some(c) = caches
            .iter()
            .find(|c| c.level == level && c.kind != "Instruction")
        {
            let scope = if c.shared_cpus.unwrap_or(1) as usize >= logical && logical > 1 {
                "device"
            } else {
                "unit"
            };
            let mut entry = json!({"Type": format!("L{level}"), "Scope": scope, "Size": c.size});
            if let Some(line) = c.line {
                entry["LineSize"] = json!(line);
            }
            memory_types.push(entry);
        }
    }
    let mut device_mem = json!({"Type": "Device", "Scope": "system"});
    if let Some(m) = memory_bytes() {
        device_mem["Size"] = json!(m);
    }
    memory_types.push(device_mem);
    let supported: Vec<Value> = memory_types.iter().map(|m| m["Type"].clone()).collect();

    let mut props = json!({
        "Name": name,
        "Vendor": vendor_name(&cpuinfo),
        "Type": "cpu",
        "Architecture": arch,
        "Runtime": "cpu",
        "ID": 0,
        "ComputeUnits": logical,
        "PhysicalCores": cores,
        "Threads": threads,
        "MaxThreadsPerGroup": 1 << 20,
        "MaxGroupMemory": super::MAX_SCRATCH_BYTES,
        "CoreSubsystem": {"UnitName": "CPU core", "UnitCount": cores, "SIMDWidth": 1},
        "MemorySubsystem": {"SupportedMemoryTypes": supported, "MemoryTypes": memory_types},
    });
    if let Some(c) = clock {
        props["ClockMHz"] = json!(c);
    }
    if let Some(m) = memory_bytes() {
        props["MemorySize"] = json!(m);
    }
    for (level, key) in [(1, "L1Size"), (2, "L2Size"), (3, "L3Size")] {
        if let Some(s) = cache_size(level) {
            props[key] = json!(s);
        }
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_lists() {
        assert_eq!(parse_size("48K"), Some(48 * 1024));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("bad"), None);
        assert_eq!(count_cpu_list("0-3,8"), 5);
        assert_eq!(count_cpu_list("0"), 1);
    }

    #[test]
    fn live_properties_have_the_basics() {
        let p = cpu_properties(2);
        assert_eq!(p["Type"], "cpu");
        assert!(p["Name"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(p["ComputeUnits"].as_u64().unwrap() >= 1);
    }
}
