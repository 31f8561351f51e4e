//! The kernel pipeline: the `.cu` sources of `kernels/` are embedded in the binary, compiled by
//! NVRTC at first use for the device's compute capability (to CUBIN, `sm_XY`), cached on disk
//! keyed by (source hash, arch, NVRTC version), and loaded once per device.
//!
//! Cache location: [`set_kernel_cache_dir`] (a `--kernel-cache` flag), else the environment
//! variable `HR_KERNEL_CACHE`, else `~/.cache/hybrid-retrieval/kernels`. A cache that cannot be
//! written is not an error (the kernels are simply recompiled next time).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::{sys as nvrtc_sys, Ptx};

use super::CudaDevice;
use crate::{Error, Result};

/// Declares the kernel families: `Variant => "file.cu"` registers `kernels/file.cu` (the enum
/// variant, [`ALL_FAMILIES`], the file name and the embedded source all come from that one line).
macro_rules! kernel_families {
    ($($variant:ident => $file:literal,)*) => {
        /// One kernel family = one `.cu` file under `kernels/`, named like the op family.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Family {
            $(#[doc = concat!("`kernels/", $file, "`.")] $variant,)*
        }

        /// Every family, in a fixed order.
        pub const ALL_FAMILIES: &[Family] = &[$(Family::$variant,)*];

        impl Family {
            /// File name under `kernels/`.
            pub fn file_name(self) -> &'static str {
                match self {
                    $(Family::$variant => $file,)*
                }
            }

            /// The embedded source text.
            pub fn source(self) -> &'static str {
                match self {
                    $(Family::$variant => include_str!(concat!("../../../../kernels/", $file)),)*
                }
            }
        }
    };
}

kernel_families! {
    Elementwise => "elementwise.cu",
    Reduce => "reduce.cu",
    Layout => "layout.cu",
    Softmax => "softmax.cu",
    LayerNorm => "layer_norm.cu",
    Optim => "optim.cu",
    Conv => "conv.cu",
    BatchNorm => "batch_norm.cu",
    Audio => "audio.cu",
    Attention => "attention.cu",
    Contrastive => "contrastive.cu",
    Plane => "plane.cu",
}

/// The shared header every family includes as `"common.cuh"`.
pub const COMMON_CUH: &str = include_str!("../../../../kernels/common.cuh");

/// NVRTC options; `tools/check_kernels.py` uses the same list. `--fmad=false` keeps `a * b + c`
/// rounding twice, as on the CPU reference.
pub fn compile_options(arch: &str) -> Vec<String> {
    vec![
        "--std=c++17".into(),
        "--fmad=false".into(),
        "-default-device".into(),
        format!("--gpu-architecture={arch}"),
    ]
}

fn cache_override() -> &'static Mutex<Option<PathBuf>> {
    static DIR: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    DIR.get_or_init(|| Mutex::new(None))
}

/// Sets the on-disk kernel cache directory for this process (overrides `HR_KERNEL_CACHE`).
pub fn set_kernel_cache_dir(dir: impl Into<PathBuf>) {
    if let Ok(mut d) = cache_override().lock() {
        *d = Some(dir.into());
    }
}

/// The on-disk kernel cache directory in effect.
pub fn kernel_cache_dir() -> PathBuf {
    if let Some(d) = cache_override().lock().ok().and_then(|d| d.clone()) {
        return d;
    }
    if let Some(d) = std::env::var_os("HR_KERNEL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".cache/hybrid-retrieval/kernels"),
        None => std::env::temp_dir().join("hybrid-retrieval-kernels"),
    }
}

/// FNV-1a 64-bit hash (stable across builds and platforms).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// True when libnvrtc can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    catch_unwind(|| unsafe { nvrtc_sys::is_culib_present() }).unwrap_or(false)
}

fn nvrtc_err(ordinal: usize, what: &str, r: nvrtc_sys::nvrtcResult) -> Error {
    Error::Cuda {
        op: "nvrtc",
        msg: format!("{what} failed on cuda:{ordinal}: {r:?}"),
    }
}

/// NVRTC (major, minor).
pub fn nvrtc_version(ordinal: usize) -> Result<(i32, i32)> {
    if !nvrtc_present() {
        return Err(Error::CudaUnavailable {
            ordinal,
            reason: "NVRTC (libnvrtc.so) not found: put the CUDA 13 nvrtc library on \
                     LD_LIBRARY_PATH (e.g. pip install nvidia-cuda-nvrtc==13.0.*)"
                .into(),
        });
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: the library is present; both out-pointers are valid.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe {
        nvrtc_sys::nvrtcVersion(&mut major, &mut minor)
    }))
    .map_err(|_| Error::CudaUnavailable {
        ordinal,
        reason: "NVRTC panicked while loading (missing symbol?)".into(),
    })?;
    r.result()
        .map_err(|_| nvrtc_err(ordinal, "nvrtcVersion", r))?;
    Ok((major, minor))
}

/// Reads the program log (empty on failure).
///
/// # Safety
/// `prog` must be a live NVRTC program.
unsafe fn program_log(prog: nvrtc_sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    if nvrtc_sys::nvrtcGetProgramLogSize(prog, &mut size) != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS
        || size == 0
    {
        return String::new();
    }
    let mut buf = vec![0 as c_char; size];
    if nvrtc_sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr())
        != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS
    {
        return String::new();
    }
    CStr::from_ptr(buf.as_ptr())
        .to_string_lossy()
        .trim()
        .to_string()
}

/// Compiles one family to CUBIN for `arch` ("sm_90"); errors carry the NVRTC log.
fn compile_cubin(ordinal: usize, family: Family, arch: &str) -> Result<Vec<u8>> {
    compile_source(ordinal, family.file_name(), family.source(), arch)
}

/// Compiles CUDA source `source` (named `file` in messages, may include `common.cuh`) to CUBIN
/// for `arch` with the project's options, without caching; NVRTC must be present (see
/// [`nvrtc_present`]). A compile error (bad source, an architecture NVRTC does not know)
/// carries the NVRTC log. Used by the kernel cache and by tests of the error paths.
pub fn compile_source(ordinal: usize, file: &str, source: &str, arch: &str) -> Result<Vec<u8>> {
    if !nvrtc_present() {
        return Err(Error::CudaUnavailable {
            ordinal,
            reason: "NVRTC (libnvrtc.so) not found".into(),
        });
    }
    let opts = compile_options(arch);
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| Error::invalid("nvrtc", "kernel source contains a NUL byte"))
    };
    let src = cstr(source)?;
    let name = cstr(file)?;
    let hdr = cstr(COMMON_CUH)?;
    let hdr_name = cstr("common.cuh")?;
    let c_opts = opts.iter().map(|o| cstr(o)).collect::<Result<Vec<_>>>()?;
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
    let run = || -> Result<Vec<u8>> {
        // SAFETY: every pointer handed to NVRTC points into CStrings alive for this closure;
        // the program is destroyed on every path after creation.
        unsafe {
            let mut prog: nvrtc_sys::nvrtcProgram = std::ptr::null_mut();
            let hdrs = [hdr.as_ptr()];
            let names = [hdr_name.as_ptr()];
            let r = nvrtc_sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                1,
                hdrs.as_ptr(),
                names.as_ptr(),
            );
            r.result()
                .map_err(|_| nvrtc_err(ordinal, "nvrtcCreateProgram", r))?;
            let r =
                nvrtc_sys::nvrtcCompileProgram(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
            let out = if r != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
                Err(Error::Cuda {
                    op: "nvrtc compile",
                    msg: format!(
                        "kernels/{file} for {arch} failed ({r:?}) with options {opts:?}:\n{}",
                        program_log(prog)
                    ),
                })
            } else {
                let mut size = 0usize;
                let r = nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size);
                if r != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
                    Err(nvrtc_err(ordinal, "nvrtcGetCUBINSize", r))
                } else {
                    let mut buf = vec![0u8; size];
                    let r = nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char);
                    r.result()
                        .map(|_| buf)
                        .map_err(|_| nvrtc_err(ordinal, "nvrtcGetCUBIN", r))
                }
            };
            nvrtc_sys::nvrtcDestroyProgram(&mut prog);
            out
        }
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(Error::CudaUnavailable {
            ordinal,
            reason: "NVRTC panicked (missing symbol in libnvrtc?)".into(),
        })
    })
}

/// The CUBIN of `family` for `arch`, from the disk cache or freshly compiled (and cached).
fn cubin(ordinal: usize, family: Family, arch: &str) -> Result<Vec<u8>> {
    let (major, minor) = nvrtc_version(ordinal)?;
    let opts = compile_options(arch).join(" ");
    let hash = fnv1a(&[
        COMMON_CUH.as_bytes(),
        family.source().as_bytes(),
        opts.as_bytes(),
    ]);
    let stem = family.file_name().trim_end_matches(".cu");
    let dir = kernel_cache_dir();
    let path = dir.join(format!(
        "{stem}-{hash:016x}-{arch}-nvrtc{major}.{minor}.cubin"
    ));
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() {
            return Ok(bytes);
        }
    }
    let bytes = compile_cubin(ordinal, family, arch)?;
    // Best effort: write to a temporary name, then rename (atomic for concurrent processes).
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = dir.join(format!(".{stem}-{hash:016x}-{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(bytes)
}

/// Per-device cache of loaded modules and their functions.
#[derive(Debug, Default)]
pub struct ModuleCache {
    modules: Mutex<HashMap<Family, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl CudaDevice {
    /// `sm_XY` of this device.
    pub fn arch(&self) -> String {
        format!(
            "sm_{}{}",
            self.compute_capability.0, self.compute_capability.1
        )
    }

    /// Loads (compiling if needed) the module of `family`.
    pub fn module(&self, family: Family) -> Result<Arc<CudaModule>> {
        let poisoned = || Error::Cuda {
            op: "kernel cache",
            msg: "module cache poisoned by an earlier panic".into(),
        };
        let mut mods = self.kernels.modules.lock().map_err(|_| poisoned())?;
        if let Some(m) = mods.get(&family) {
            return Ok(m.clone());
        }
        let image = cubin(self.ordinal, family, &self.arch())?;
        let m = self
            .ctx
            .load_module(Ptx::from_binary(image))
            .map_err(|e| Error::Cuda {
                op: "load kernel module",
                msg: format!(
                    "kernels/{} ({}) on cuda:{}: {e}",
                    family.file_name(),
                    self.arch(),
                    self.ordinal
                ),
            })?;
        mods.insert(family, m.clone());
        Ok(m)
    }

    /// The kernel `name` of `family` (cached after the first lookup).
    pub fn function(&self, family: Family, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self
            .kernels
            .functions
            .lock()
            .ok()
            .and_then(|f| f.get(name).cloned())
        {
            return Ok(f);
        }
        let f = self
            .module(family)?
            .load_function(name)
            .map_err(|e| Error::Cuda {
                op: "load kernel",
                msg: format!("{name} in kernels/{}: {e}", family.file_name()),
            })?;
        if let Ok(mut fs) = self.kernels.functions.lock() {
            fs.insert(name, f.clone());
        }
        Ok(f)
    }
}

/// Compiles (or loads from the disk cache) and loads every kernel family on device `ordinal`;
/// returns one line per family (for `hr-train kernels --precompile`).
pub fn precompile_all(ordinal: usize) -> Result<Vec<String>> {
    let dev = super::context(ordinal)?;
    let mut lines = Vec::new();
    for &f in ALL_FAMILIES {
        let t = std::time::Instant::now();
        dev.module(f)?;
        lines.push(format!(
            "{} for {}: ready in {:.2?} (cache {})",
            f.file_name(),
            dev.arch(),
            t.elapsed(),
            kernel_cache_dir().display()
        ));
    }
    Ok(lines)
}
