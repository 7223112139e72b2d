//! The kernels' sources (`kernels/`, built into the binary) and their compilation by NVRTC:
//! `common.cuh` + a family's file, per precision and architecture, to PTX that the driver loads.
//! PTX is cached on disk, keyed by the source's hash, the architecture, the precision and the
//! NVRTC version, so a second start compiles nothing.
//!
//! NVRTC is found as the CUDA libraries are (the loader's path), or at `GRIST_NVRTC_LIB` (a
//! `libnvrtc.so.13` file, e.g. from the `nvidia-cuda-nvrtc` wheel: `tests/fetch_nvrtc.sh`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use super::device::FAMILIES;
use crate::error::{GristError, Result};
use crate::train::config::Precision;

pub const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// Each family's source file.
pub const SOURCES: &[(&str, &str)] = &[
    ("embedding", include_str!("../../../kernels/embedding.cu")),
    ("rmsnorm", include_str!("../../../kernels/rmsnorm.cu")),
    ("rope", include_str!("../../../kernels/rope.cu")),
    ("swiglu", include_str!("../../../kernels/swiglu.cu")),
    ("attention", include_str!("../../../kernels/attention.cu")),
    (
        "cross_entropy",
        include_str!("../../../kernels/cross_entropy.cu"),
    ),
    ("adamw", include_str!("../../../kernels/adamw.cu")),
    ("norm", include_str!("../../../kernels/norm.cu")),
    ("cast", include_str!("../../../kernels/cast.cu")),
];

/// The program NVRTC compiles for a family.
pub fn program(family: &str) -> Result<String> {
    let (_, src) = SOURCES
        .iter()
        .find(|(f, _)| *f == family)
        .ok_or_else(|| GristError::Internal(format!("no kernel family `{family}`")))?;
    Ok(format!("{COMMON}\n{src}"))
}

/// The family whose file defines `kernel`.
pub fn family_of(kernel: &str) -> Option<&'static str> {
    FAMILIES
        .iter()
        .find(|(_, ks)| ks.contains(&kernel))
        .map(|(f, _)| *f)
}

/// Keeps an NVRTC library loaded from an explicit path, so cudarc's own lookup by name finds it.
static PRELOADED: OnceLock<std::result::Result<libloading::Library, String>> = OnceLock::new();

/// Makes NVRTC loadable: the one at `GRIST_NVRTC_LIB` when set, else whatever the loader finds.
/// Returns NVRTC's version, or a sentence saying what is missing.
pub fn load() -> std::result::Result<(i32, i32), String> {
    load_with(std::env::var("GRIST_NVRTC_LIB").ok())
}

/// [`load`] with NVRTC's library at `path` (loaded once per process; later calls find it).
pub fn load_with(path: Option<String>) -> std::result::Result<(i32, i32), String> {
    if let Some(path) = path {
        let loaded = PRELOADED.get_or_init(|| {
            // SAFETY: loading NVRTC runs its initialisers, which have no preconditions.
            unsafe { libloading::Library::new(&path) }.map_err(|e| e.to_string())
        });
        if let Err(e) = loaded {
            return Err(format!("GRIST_NVRTC_LIB={path} cannot be loaded: {e}"));
        }
    }
    // SAFETY: only probes for the library by its names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(
            "NVRTC (libnvrtc.so.13, CUDA 13) is not installed: install the CUDA toolkit or \
             `pip install nvidia-cuda-nvrtc` and set GRIST_NVRTC_LIB to its libnvrtc.so.13 \
             (`bash tests/fetch_nvrtc.sh` prints one)"
                .into(),
        );
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); the pointers are valid for writes.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcVersion failed: {status:?}"));
    }
    Ok((major, minor))
}

/// Where compiled PTX is kept: `$GRIST_CACHE_DIR/ptx`, else `~/.cache/grist/ptx`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("GRIST_CACHE_DIR") {
        return Some(PathBuf::from(d).join("ptx"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/grist/ptx"))
}

/// A compiled family.
pub struct Compiled {
    pub ptx: String,
    pub from_cache: bool,
}

/// Compiles `family` for `compute_{arch}` (e.g. 90) in `precision`, through the disk cache
/// (`cache`: none to always compile).
pub fn compile(
    family: &str,
    arch: u32,
    precision: Precision,
    cache: Option<&Path>,
) -> Result<Compiled> {
    let version = load().map_err(GristError::Device)?;
    let src = program(family)?;
    let key = format!(
        "{family}-{:016x}-sm{arch}-{}-nvrtc{}.{}.ptx",
        xxhash_rust::xxh3::xxh3_64(src.as_bytes()),
        precision.as_str(),
        version.0,
        version.1
    );
    if let Some(dir) = cache
        && let Ok(ptx) = std::fs::read_to_string(dir.join(&key))
        && ptx.contains(".entry")
        && !ptx.contains('\0')
    {
        return Ok(Compiled {
            ptx,
            from_cache: true,
        });
    }
    let mut options = vec![
        format!("--gpu-architecture=compute_{arch}"),
        "--std=c++17".to_string(),
    ];
    if precision == Precision::Bf16 {
        options.push("-DGRIST_ACT_BF16".into());
    }
    let opts = CompileOptions {
        options,
        name: Some(format!("{family}.cu")),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(&src, opts)
        .map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => GristError::Device(format!(
                "kernels/{family}.cu does not compile for sm_{arch} ({}):\n{}",
                precision.as_str(),
                log.to_string_lossy()
            )),
            other => GristError::Device(format!("NVRTC on kernels/{family}.cu: {other}")),
        })?
        .to_src();
    if let Some(dir) = cache {
        // A cache that cannot be written only costs a compile next time.
        let tmp = dir.join(format!("{key}.tmp{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir)
            .and_then(|_| std::fs::write(&tmp, &ptx))
            .and_then(|_| std::fs::rename(&tmp, dir.join(&key)));
    }
    Ok(Compiled {
        ptx,
        from_cache: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC: `GRIST_NVRTC_LIB`, or the wheel `tests/fetch_nvrtc.sh` fetches from PyPI (cached);
    /// the test fails when neither works.
    fn nvrtc() {
        let path = std::env::var("GRIST_NVRTC_LIB").unwrap_or_else(|_| {
            let out = std::process::Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fetch_nvrtc.sh"))
                .output()
                .unwrap();
            assert!(out.status.success(), "cannot fetch NVRTC: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        });
        load_with(Some(path)).unwrap();
    }

    #[test]
    fn ptx_is_cached_by_source_architecture_precision_and_version() {
        nvrtc();
        let dir = tempfile::tempdir().unwrap();
        let first = compile("cast", 90, Precision::Bf16, Some(dir.path())).unwrap();
        assert!(!first.from_cache && first.ptx.contains(".entry cast_to_act"));
        let again = compile("cast", 90, Precision::Bf16, Some(dir.path())).unwrap();
        assert!(again.from_cache);
        assert_eq!(again.ptx, first.ptx);
        for (arch, p) in [(80, Precision::Bf16), (90, Precision::F32)] {
            assert!(
                !compile("cast", arch, p, Some(dir.path()))
                    .unwrap()
                    .from_cache
            );
        }
        // A damaged cache file is compiled again, not loaded.
        for f in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::write(f.unwrap().path(), ".entry\0junk").unwrap();
        }
        let fresh = compile("cast", 90, Precision::Bf16, Some(dir.path())).unwrap();
        assert!(!fresh.from_cache);
        assert_eq!(fresh.ptx, first.ptx);
    }

    #[test]
    fn every_kernel_has_its_family_and_every_family_its_file() {
        for (family, kernels) in FAMILIES {
            let src = program(family).unwrap();
            for k in *kernels {
                let defined = src.contains("extern \"C\"")
                    && src
                        .match_indices(&format!("{k}("))
                        .any(|(i, _)| src[..i].ends_with(|c: char| c.is_whitespace()));
                assert!(defined, "kernels/{family}.cu lacks `{k}`");
                assert_eq!(family_of(k), Some(*family));
            }
        }
        assert_eq!(SOURCES.len(), FAMILIES.len());
    }
}
