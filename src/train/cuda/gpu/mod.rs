//! The GPU device: cudarc with the driver, NVRTC and cuBLASLt loaded at run time. Buffers are
//! plain device allocations addressed by raw pointer plus offset; kernels are launched with the
//! shapes kernels/README.md gives; GEMMs go through cuBLASLt (bf16 or f32 operands, f32
//! accumulation), each shape's algorithm chosen once by cuBLASLt's heuristic and kept. Everything
//! runs on one stream, in order.
//!
//! [`probe`] says what is there (driver, device, compute capability, NVRTC, cuBLASLt) or, as a
//! sentence, what is missing; nothing here panics when a library is absent.

mod launch;
mod lt;

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublaslt::sys as ltsys;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
    sys as drv,
};
use cudarc::nvrtc::Ptx;

use self::launch::Arg;
use super::device::{BufId, Class, Device, FAMILIES, Gemm, Kernel, View};
use super::nvrtc;
use crate::error::{GristError, Result};
use crate::train::config::Precision;

/// The oldest architecture grist's kernels and bf16 GEMMs run on (Ampere).
pub const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// What [`probe`] found.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    /// The driver's CUDA version, e.g. 13000.
    pub driver_version: i32,
    pub devices: i32,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
    pub nvrtc: (i32, i32),
}

impl GpuInfo {
    /// The `compute_XY` architecture to compile for.
    pub fn arch(&self) -> u32 {
        (self.compute_capability.0 * 10 + self.compute_capability.1) as u32
    }
}

fn driver_error(what: &str, e: impl std::fmt::Debug) -> GristError {
    GristError::Device(format!("CUDA driver: {what}: {e:?}"))
}

/// The driver, device 0 and NVRTC, or a sentence saying which is missing.
pub fn probe() -> Result<GpuInfo> {
    probe_context().map(|(info, _)| info)
}

/// [`probe`], keeping device 0's context for the device that follows (so the primary context is
/// not torn down and made again).
fn probe_context() -> Result<(GpuInfo, Arc<CudaContext>)> {
    // SAFETY: probes for the library by its names; loads nothing else.
    if !unsafe { drv::is_culib_present() } {
        return Err(GristError::Device(
            "no NVIDIA driver: libcuda.so was not found (is this a machine with an NVIDIA GPU \
             and its driver installed?); `backend: cpu` trains without one"
                .into(),
        ));
    }
    cudarc::driver::result::init().map_err(|e| driver_error("cuInit failed", e))?;
    let mut driver_version = 0;
    // SAFETY: the driver is loaded and initialised; the pointer is valid.
    unsafe { drv::cuDriverGetVersion(&mut driver_version) }
        .result()
        .map_err(|e| driver_error("version", e))?;
    let devices =
        cudarc::driver::result::device::get_count().map_err(|e| driver_error("device count", e))?;
    if devices < 1 {
        return Err(GristError::Device(
            "the NVIDIA driver is installed but sees no GPU".into(),
        ));
    }
    let ctx = CudaContext::new(0).map_err(|e| driver_error("context on device 0", e))?;
    let name = ctx.name().map_err(|e| driver_error("device name", e))?;
    let cc = ctx
        .compute_capability()
        .map_err(|e| driver_error("compute capability", e))?;
    if cc < MIN_COMPUTE_CAPABILITY {
        return Err(GristError::Device(format!(
            "{name} has compute capability {}.{}; grist's CUDA backend needs {}.{} or newer \
             (Ampere: bf16 GEMMs)",
            cc.0, cc.1, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
        )));
    }
    let total_memory = ctx.total_mem().map_err(|e| driver_error("memory", e))?;
    let nvrtc = nvrtc::load().map_err(GristError::Device)?;
    // PTX from NVRTC x.y needs a driver of CUDA x.y or newer to load it.
    let needed = nvrtc.0 * 1000 + nvrtc.1 * 10;
    if driver_version < needed {
        return Err(GristError::Device(format!(
            "the NVIDIA driver supports CUDA {}.{}, older than the NVRTC {}.{} the kernels are              compiled with: update the driver (CUDA 13 needs R580 or newer) or use an NVRTC of              the driver's CUDA version",
            driver_version / 1000,
            driver_version % 1000 / 10,
            nvrtc.0,
            nvrtc.1
        )));
    }
    // SAFETY: probes for the library by its names.
    if !unsafe { ltsys::is_culib_present() } {
        return Err(GristError::Device(
            "cuBLASLt (libcublasLt.so.13) was not found: install the CUDA 13 toolkit's cuBLAS \
             or `pip install nvidia-cublas` and put its lib folder on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let info = GpuInfo {
        driver_version,
        devices,
        name,
        compute_capability: cc,
        total_memory,
        nvrtc,
    };
    Ok((info, ctx))
}

/// The dense bf16 tensor-core peak of a GPU in FLOP/s (the datasheets' figures without
/// sparsity), for MFU; `None` for a GPU not in the table.
pub fn peak_bf16_flops(name: &str, cc: (i32, i32)) -> Option<f64> {
    let n = name.to_ascii_uppercase();
    if n.contains("NVL") {
        None
    } else if n.contains("H100") && n.contains("PCIE") {
        Some(756e12)
    } else if n.contains("H100") || n.contains("H200") || n.contains("GH200") {
        Some(989.4e12)
    } else if n.contains("A100") {
        Some(312e12)
    } else {
        match cc {
            (9, 0) => Some(989.4e12),
            (8, 0) => Some(312e12),
            _ => None,
        }
    }
}

struct Buffer {
    class: Class,
    /// Keeps the allocation alive; addressed through `ptr`.
    _mem: CudaSlice<u8>,
    ptr: u64,
    elems: usize,
}

pub struct GpuDevice {
    precision: Precision,
    info: GpuInfo,
    _ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    bufs: HashMap<u32, Buffer>,
    next: u32,
    lt: lt::Lt,
    /// Kernels compiled now and taken from the PTX cache, for the start-up log.
    pub compiled: (usize, usize),
    /// Bytes of device memory this device holds: its buffers and the workspace.
    held: usize,
}

impl GpuDevice {
    /// Device 0, with every kernel compiled (or taken from the PTX cache) and loaded.
    pub fn new(precision: Precision) -> Result<GpuDevice> {
        let (info, ctx) = probe_context()?;
        let stream = ctx.default_stream();
        let cache = nvrtc::cache_dir();
        let mut functions = HashMap::new();
        let mut compiled = (0, 0);
        for (family, kernels) in FAMILIES {
            let c = nvrtc::compile(family, info.arch(), precision, cache.as_deref())?;
            if c.from_cache {
                compiled.1 += 1;
            } else {
                compiled.0 += 1;
            }
            let module = ctx
                .load_module(Ptx::from_src(c.ptx))
                .map_err(|e| driver_error(&format!("loading kernels/{family}.cu"), e))?;
            for k in *kernels {
                let f = module
                    .load_function(k)
                    .map_err(|e| driver_error(&format!("kernel {k}"), e))?;
                functions.insert(*k, f);
            }
        }
        let lt = lt::Lt::new(&stream, precision)?;
        Ok(GpuDevice {
            precision,
            info,
            _ctx: ctx,
            stream,
            functions,
            bufs: HashMap::new(),
            next: 0,
            lt,
            compiled,
            held: lt::WORKSPACE_BYTES,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    fn elem_bytes(&self, class: Class) -> usize {
        match (class, self.precision) {
            (Class::Act, Precision::Bf16) => 2,
            _ => 4,
        }
    }

    /// The device address of a view, checked against its buffer.
    fn ptr(&self, v: View) -> Result<u64> {
        let b = self
            .bufs
            .get(&v.buf.0)
            .ok_or_else(|| GristError::Internal(format!("cuda: unknown buffer in {v:?}")))?;
        if b.class != v.class || v.offset + v.len > b.elems {
            return Err(GristError::Internal(format!(
                "cuda: view {v:?} outside its buffer ({:?}, {} elements)",
                b.class, b.elems
            )));
        }
        Ok(b.ptr + (v.offset * self.elem_bytes(v.class)) as u64)
    }

    fn cu_stream(&self) -> drv::CUstream {
        self.stream.cu_stream()
    }

    fn launch_with(&self, name: &'static str, grid: (u32, u32, u32), args: &[Arg]) -> Result<()> {
        let f = self
            .functions
            .get(name)
            .ok_or_else(|| GristError::Internal(format!("cuda: kernel {name} not loaded")))?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::Ptr(p) => b.arg(p),
                Arg::I32(x) => b.arg(x),
                Arg::I64(x) => b.arg(x),
                Arg::F32(x) => b.arg(x),
                Arg::F64(x) => b.arg(x),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (launch::BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the kernel's C signature (kernels/README.md) and every
        // pointer was checked against its buffer's bounds by `ptr`.
        unsafe { b.launch(cfg) }.map_err(|e| driver_error(&format!("launching {name}"), e))?;
        Ok(())
    }
}

impl Drop for GpuDevice {
    fn drop(&mut self) {
        // Nothing queued may still use the modules, the cuBLASLt handle or its descriptors,
        // which the fields' drops release after this.
        let _ = self.stream.synchronize();
    }
}

impl Device for GpuDevice {
    fn describe(&self) -> String {
        format!(
            "{} (compute capability {}.{}, {:.0} GiB; {})",
            self.info.name,
            self.info.compute_capability.0,
            self.info.compute_capability.1,
            self.info.total_memory as f64 / (1u64 << 30) as f64,
            self.precision.as_str()
        )
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn alloc(&mut self, class: Class, len: usize) -> Result<BufId> {
        let bytes = len.max(1) * self.elem_bytes(class);
        // SAFETY: a plain device allocation; it is poisoned below before any read.
        let mem = unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| {
            GristError::Device(format!(
                "out of GPU memory allocating {:.2} GiB ({e:?}): lower micro_batch_size or seq_len, or set recompute: true",
                bytes as f64 / (1u64 << 30) as f64
            ))
        })?;
        let ptr = {
            let (p, _sync) = mem.device_ptr(&self.stream);
            p
        };
        let id = self.next;
        self.next += 1;
        self.held += bytes;
        self.bufs.insert(
            id,
            Buffer {
                class,
                _mem: mem,
                ptr,
                elems: len.max(1),
            },
        );
        let all = View {
            buf: BufId(id),
            class,
            offset: 0,
            len: len.max(1),
        };
        if class == Class::Int {
            // SAFETY: the view is inside the allocation just made.
            unsafe { drv::cuMemsetD32Async(ptr, u32::MAX, all.len, self.cu_stream()) }
                .result()
                .map_err(|e| driver_error("poisoning a buffer", e))?;
        } else {
            self.fill(all, f32::NAN)?;
        }
        Ok(BufId(id))
    }

    fn free(&mut self, buf: BufId) {
        // Freed in stream order by the allocation's drop.
        if let Some(b) = self.bufs.remove(&buf.0) {
            self.held -= b.elems * self.elem_bytes(b.class);
        }
    }

    fn upload(&mut self, dst: View, data: &[f32]) -> Result<()> {
        if data.len() != dst.len || dst.class == Class::Int {
            return Err(GristError::Internal(format!(
                "cuda: upload of {} floats into {dst:?}",
                data.len()
            )));
        }
        let ptr = self.ptr(dst)?;
        let s = self.cu_stream();
        // SAFETY: the destination is inside its buffer (checked); the host data outlives the
        // copy (the stream is synchronised before returning).
        unsafe {
            if self.elem_bytes(dst.class) == 2 {
                let bits: Vec<u16> = data
                    .iter()
                    .map(|&x| half::bf16::from_f32(x).to_bits())
                    .collect();
                cudarc::driver::result::memcpy_htod_async(ptr, &bits, s)
                    .map_err(|e| driver_error("upload", e))?;
                self.stream
                    .synchronize()
                    .map_err(|e| driver_error("upload", e))?;
            } else {
                cudarc::driver::result::memcpy_htod_async(ptr, data, s)
                    .map_err(|e| driver_error("upload", e))?;
                self.stream
                    .synchronize()
                    .map_err(|e| driver_error("upload", e))?;
            }
        }
        Ok(())
    }

    fn upload_int(&mut self, dst: View, data: &[u32]) -> Result<()> {
        if data.len() != dst.len || dst.class != Class::Int {
            return Err(GristError::Internal(format!(
                "cuda: upload of {} ints into {dst:?}",
                data.len()
            )));
        }
        let ptr = self.ptr(dst)?;
        // SAFETY: as in `upload`.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(ptr, data, self.cu_stream())
                .map_err(|e| driver_error("upload", e))?;
        }
        self.stream
            .synchronize()
            .map_err(|e| driver_error("upload", e))
    }

    fn download(&self, src: View) -> Result<Vec<f32>> {
        let ptr = self.ptr(src)?;
        let s = self.cu_stream();
        // SAFETY: the source is inside its buffer; the host buffer outlives the copy (the
        // stream is synchronised before it is read).
        unsafe {
            if self.elem_bytes(src.class) == 2 {
                let mut bits = vec![0u16; src.len];
                cudarc::driver::result::memcpy_dtoh_async(&mut bits, ptr, s)
                    .map_err(|e| driver_error("download", e))?;
                self.stream
                    .synchronize()
                    .map_err(|e| driver_error("download", e))?;
                Ok(bits
                    .into_iter()
                    .map(|b| half::bf16::from_bits(b).to_f32())
                    .collect())
            } else {
                let mut out = vec![0f32; src.len];
                cudarc::driver::result::memcpy_dtoh_async(&mut out, ptr, s)
                    .map_err(|e| driver_error("download", e))?;
                self.stream
                    .synchronize()
                    .map_err(|e| driver_error("download", e))?;
                Ok(out)
            }
        }
    }

    fn download_int(&self, src: View) -> Result<Vec<u32>> {
        let ptr = self.ptr(src)?;
        let mut out = vec![0u32; src.len];
        // SAFETY: as in `download`.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(&mut out, ptr, self.cu_stream())
                .map_err(|e| driver_error("download", e))?;
        }
        self.stream
            .synchronize()
            .map_err(|e| driver_error("download", e))?;
        Ok(out)
    }

    fn fill(&mut self, dst: View, value: f32) -> Result<()> {
        let ptr = self.ptr(dst)?;
        let s = self.cu_stream();
        // SAFETY: the view is inside its buffer (checked by `ptr`).
        let r = unsafe {
            if self.elem_bytes(dst.class) == 2 {
                drv::cuMemsetD16Async(ptr, half::bf16::from_f32(value).to_bits(), dst.len, s)
            } else {
                drv::cuMemsetD32Async(ptr, value.to_bits(), dst.len, s)
            }
        };
        r.result().map_err(|e| driver_error("memset", e))
    }

    fn launch(&mut self, kernel: &Kernel) -> Result<()> {
        kernel.check()?;
        let (grid, args) = launch::launch_args(kernel, &|v| self.ptr(v))?;
        self.launch_with(kernel.name(), grid, &args)
    }

    fn gemm(&mut self, g: &Gemm) -> Result<()> {
        g.check()?;
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        let (pa, pb, pd) = (self.ptr(g.a)?, self.ptr(g.b)?, self.ptr(g.d)?);
        let pc = g.c.map(|c| self.ptr(c)).transpose()?.unwrap_or(pd);
        let stream = self.cu_stream() as cudarc::cublaslt::sys::cudaStream_t;
        self.lt.matmul(g, [pa, pb, pc, pd], stream)
    }

    fn synchronize(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error("synchronize", e))
    }

    fn memory_in_use(&self) -> Option<usize> {
        Some(self.held)
    }
}
