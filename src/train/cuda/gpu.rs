//! The GPU device: cudarc with the driver, NVRTC and cuBLASLt loaded at run time. Buffers are
//! plain device allocations addressed by raw pointer plus offset; kernels are launched with the
//! shapes kernels/README.md gives; GEMMs go through cuBLASLt (bf16 or f32 operands, f32
//! accumulation), each shape's algorithm chosen once by cuBLASLt's heuristic and kept. Everything
//! runs on one stream, in order.
//!
//! [`probe`] says what is there (driver, device, compute capability, NVRTC, cuBLASLt) or, as a
//! sentence, what is missing; nothing here panics when a library is absent.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::{result as lt, sys as ltsys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
    sys as drv,
};
use cudarc::nvrtc::Ptx;

use super::device::{BufId, Class, Device, FAMILIES, Gemm, Kernel, SUM_SQUARES_BLOCKS, View};
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
    // SAFETY: probes for the library by its names.
    if !unsafe { ltsys::is_culib_present() } {
        return Err(GristError::Device(
            "cuBLASLt (libcublasLt.so.13) was not found: install the CUDA 13 toolkit's cuBLAS \
             or `pip install nvidia-cublas` and put its lib folder on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    Ok(GpuInfo {
        driver_version,
        devices,
        name,
        compute_capability: cc,
        total_memory,
        nvrtc,
    })
}

/// The dense bf16 tensor-core peak of a GPU in FLOP/s (the datasheets' figures without
/// sparsity), for MFU; `None` for a GPU not in the table.
pub fn peak_bf16_flops(name: &str, cc: (i32, i32)) -> Option<f64> {
    let n = name.to_ascii_uppercase();
    if n.contains("H100") && n.contains("PCIE") {
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

/// A GEMM shape with its operand alignments: the key of a chosen algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GemmKey {
    m: usize,
    n: usize,
    k: usize,
    a_trans: bool,
    b_trans: bool,
    has_c: bool,
    d_act: bool,
    align: [u32; 4],
}

struct GemmPlan {
    desc: ltsys::cublasLtMatmulDesc_t,
    a: ltsys::cublasLtMatrixLayout_t,
    b: ltsys::cublasLtMatrixLayout_t,
    c: ltsys::cublasLtMatrixLayout_t,
    algo: ltsys::cublasLtMatmulAlgo_t,
}

pub struct GpuDevice {
    precision: Precision,
    info: GpuInfo,
    _ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    bufs: HashMap<u32, Buffer>,
    next: u32,
    lt: ltsys::cublasLtHandle_t,
    _workspace: CudaSlice<u8>,
    workspace_ptr: u64,
    gemms: HashMap<GemmKey, GemmPlan>,
    /// Kernels compiled now and taken from the PTX cache, for the start-up log.
    pub compiled: (usize, usize),
}

const WORKSPACE_BYTES: usize = 32 << 20;

impl GpuDevice {
    /// Device 0, with every kernel compiled (or taken from the PTX cache) and loaded.
    pub fn new(precision: Precision) -> Result<GpuDevice> {
        let info = probe()?;
        let ctx = CudaContext::new(0).map_err(|e| driver_error("context", e))?;
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
        let lt = lt::create_handle().map_err(|e| GristError::Device(format!("cuBLASLt: {e:?}")))?;
        // SAFETY: a plain device allocation, written by cuBLASLt only.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }
            .map_err(|e| driver_error("workspace", e))?;
        let workspace_ptr = {
            let (p, _sync) = workspace.device_ptr(&stream);
            p
        };
        Ok(GpuDevice {
            precision,
            info,
            _ctx: ctx,
            stream,
            functions,
            bufs: HashMap::new(),
            next: 0,
            lt,
            _workspace: workspace,
            workspace_ptr,
            gemms: HashMap::new(),
            compiled,
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

    fn gemm_plan(&mut self, key: GemmKey) -> Result<&GemmPlan> {
        if !self.gemms.contains_key(&key) {
            let plan = self.make_gemm_plan(key)?;
            self.gemms.insert(key, plan);
        }
        Ok(&self.gemms[&key])
    }

    /// Row-major `d[m,n] = a·b (+c)` is column-major `dᵀ[n,m] = bᵀ·aᵀ`: cuBLASLt's A is our b,
    /// its B our a.
    fn make_gemm_plan(&self, key: GemmKey) -> Result<GemmPlan> {
        let err = |what: &str, e: lt::CublasError| {
            GristError::Device(format!("cuBLASLt {what} for {key:?}: {e:?}"))
        };
        let op_type = match self.precision {
            Precision::Bf16 => ltsys::cudaDataType_t::CUDA_R_16BF,
            Precision::F32 => ltsys::cudaDataType_t::CUDA_R_32F,
        };
        let d_type = if key.d_act {
            op_type
        } else {
            ltsys::cudaDataType_t::CUDA_R_32F
        };
        let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
        // cuBLASLt's A = our b: stored [k, n] row-major is column-major [n, k] (ld n), op N;
        // stored [n, k] is column-major [k, n] (ld k), op T.
        let a = if key.b_trans {
            lt::create_matrix_layout(op_type, k, n, k as i64)
        } else {
            lt::create_matrix_layout(op_type, n, k, n as i64)
        }
        .map_err(|e| err("layout A", e))?;
        // cuBLASLt's B = our a: stored [m, k] is column-major [k, m] (ld k), op N; stored
        // [k, m] is column-major [m, k] (ld m), op T.
        let b = if key.a_trans {
            lt::create_matrix_layout(op_type, m, k, m as i64)
        } else {
            lt::create_matrix_layout(op_type, k, m, k as i64)
        }
        .map_err(|e| err("layout B", e))?;
        let c = lt::create_matrix_layout(d_type, n, m, n as i64).map_err(|e| err("layout C", e))?;
        let desc = lt::create_matmul_desc(
            ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ltsys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(|e| err("descriptor", e))?;
        let set_op = |attr, t: bool| {
            let v = t as i32;
            // SAFETY: the descriptor is live; the value is an i32 as the attribute expects.
            unsafe {
                lt::set_matmul_desc_attribute(
                    desc,
                    attr,
                    (&v) as *const i32 as *const c_void,
                    std::mem::size_of::<i32>(),
                )
            }
        };
        set_op(
            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            key.b_trans,
        )
        .map_err(|e| err("transa", e))?;
        set_op(
            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
            key.a_trans,
        )
        .map_err(|e| err("transb", e))?;
        let pref = lt::create_matmul_pref().map_err(|e| err("preference", e))?;
        use ltsys::cublasLtMatmulPreferenceAttributes_t as P;
        let workspace = WORKSPACE_BYTES as u64;
        // SAFETY: the preference is live; the workspace limit is a uint64_t.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&workspace) as *const u64 as *const c_void,
                std::mem::size_of::<u64>(),
            )
        }
        .map_err(|e| err("workspace preference", e))?;
        // Alignments (uint32_t, bytes) of cuBLASLt's A (our b), B (our a), C and D: algorithms
        // that need more than the pointers have are left out.
        let [aa, ab, ac, ad] = key.align;
        for (attr, v) in [
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, ab),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, aa),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, ac),
            (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, ad),
        ] {
            // SAFETY: the preference is live; these attributes are uint32_t.
            unsafe {
                lt::set_matmul_pref_attribute(
                    pref,
                    attr,
                    (&v) as *const u32 as *const c_void,
                    std::mem::size_of::<u32>(),
                )
            }
            .map_err(|e| err("alignment preference", e))?;
        }
        // SAFETY: every descriptor is live.
        let heuristic = unsafe { lt::get_matmul_algo_heuristic(self.lt, desc, a, b, c, c, pref) };
        // SAFETY: the preference is no longer used.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        let heuristic = heuristic.map_err(|e| err("no algorithm", e))?;
        Ok(GemmPlan {
            desc,
            a,
            b,
            c,
            algo: heuristic.algo,
        })
    }

    fn launch_with(
        &self,
        name: &'static str,
        grid: (u32, u32, u32),
        block: u32,
        args: &[Arg],
    ) -> Result<()> {
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
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the kernel's C signature (kernels/README.md) and every
        // pointer was checked against its buffer's bounds by `ptr`.
        unsafe { b.launch(cfg) }.map_err(|e| driver_error(&format!("launching {name}"), e))?;
        Ok(())
    }
}

/// One kernel argument as its C type.
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

fn int(x: usize) -> Result<Arg> {
    i32::try_from(x)
        .map(Arg::I32)
        .map_err(|_| GristError::Usage(format!("cuda: a size of {x} does not fit a kernel's int")))
}

/// Blocks for a grid-stride loop over `n` elements, 256 threads each.
fn grid_1d(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1)
}

fn grid_rows(rows: usize) -> Result<(u32, u32, u32)> {
    u32::try_from(rows.max(1))
        .map(|r| (r, 1, 1))
        .map_err(|_| GristError::Usage(format!("cuda: {rows} rows is too many for one launch")))
}

fn largest_alignment(ptr: u64) -> u32 {
    (1u64 << ptr.trailing_zeros().min(8)) as u32
}

impl Drop for GpuDevice {
    fn drop(&mut self) {
        for p in self.gemms.values() {
            // SAFETY: each descriptor was created by this device and is destroyed once.
            unsafe {
                let _ = lt::destroy_matrix_layout(p.a);
                let _ = lt::destroy_matrix_layout(p.b);
                let _ = lt::destroy_matrix_layout(p.c);
                let _ = lt::destroy_matmul_desc(p.desc);
            }
        }
        // SAFETY: the handle is not used after this.
        let _ = unsafe { lt::destroy_handle(self.lt) };
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
        self.bufs.remove(&buf.0);
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
        use Arg::*;
        let p = |v: View| self.ptr(v).map(Ptr);
        let name = kernel.name();
        match *kernel {
            Kernel::EmbeddingFwd {
                table,
                tokens,
                x,
                rows,
                d,
            } => {
                let args = [p(table)?, p(tokens)?, p(x)?, int(rows)?, int(d)?];
                self.launch_with(name, grid_1d(rows * d), 256, &args)
            }
            Kernel::EmbeddingBwd {
                dx,
                order,
                seg_start,
                seg_token,
                dtable,
                segments,
                d,
            } => {
                let args = [
                    p(dx)?,
                    p(order)?,
                    p(seg_start)?,
                    p(seg_token)?,
                    p(dtable)?,
                    int(segments)?,
                    int(d)?,
                ];
                self.launch_with(name, grid_rows(segments)?, 256, &args)
            }
            Kernel::RmsnormFwd {
                x,
                w,
                y,
                rstd,
                rows,
                d,
                eps,
            } => {
                let args = [p(x)?, p(w)?, p(y)?, p(rstd)?, int(rows)?, int(d)?, F32(eps)];
                self.launch_with(name, grid_rows(rows)?, 256, &args)
            }
            Kernel::RmsnormBwd {
                dy,
                x,
                w,
                rstd,
                dx,
                dw_part,
                rows,
                d,
                rows_per_block,
                accumulate,
            } => {
                let args = [
                    p(dy)?,
                    p(x)?,
                    p(w)?,
                    p(rstd)?,
                    p(dx)?,
                    p(dw_part)?,
                    int(rows)?,
                    int(d)?,
                    int(rows_per_block)?,
                    I32(accumulate as i32),
                ];
                self.launch_with(name, grid_rows(rows.div_ceil(rows_per_block))?, 256, &args)
            }
            Kernel::AddColumnSums {
                part,
                out,
                parts,
                d,
            } => {
                let args = [p(part)?, p(out)?, int(parts)?, int(d)?];
                self.launch_with(name, grid_1d(d), 256, &args)
            }
            Kernel::Rope {
                input,
                out,
                cos,
                sin,
                positions,
                rows,
                heads,
                head_dim,
                ..
            } => {
                let args = [
                    p(input)?,
                    p(out)?,
                    p(cos)?,
                    p(sin)?,
                    p(positions)?,
                    int(rows)?,
                    int(heads)?,
                    int(head_dim)?,
                ];
                self.launch_with(name, grid_1d(rows * heads * head_dim / 2), 256, &args)
            }
            Kernel::SwigluFwd { gate, up, h, n } => {
                let args = [p(gate)?, p(up)?, p(h)?, I64(n as i64)];
                self.launch_with(name, grid_1d(n), 256, &args)
            }
            Kernel::SwigluBwd {
                dh,
                gate,
                up,
                dgate,
                dup,
                n,
            } => {
                let args = [p(dh)?, p(gate)?, p(up)?, p(dgate)?, p(dup)?, I64(n as i64)];
                self.launch_with(name, grid_1d(n), 256, &args)
            }
            Kernel::AttentionFwd {
                q,
                k,
                v,
                starts,
                o,
                lse,
                shape: s,
            } => {
                let args = [
                    p(q)?,
                    p(k)?,
                    p(v)?,
                    p(starts)?,
                    p(o)?,
                    p(lse)?,
                    int(s.batch)?,
                    int(s.tq)?,
                    int(s.tk)?,
                    int(s.q_offset)?,
                    int(s.heads)?,
                    int(s.kv_heads)?,
                    int(s.head_dim)?,
                    F32(s.scale),
                ];
                let grid = attention_grid(s.tq, s.heads, s.batch)?;
                self.launch_with(name, grid, 256, &args)
            }
            Kernel::AttentionBwdDelta {
                o,
                dout,
                delta,
                rows,
                heads,
                head_dim,
            } => {
                let args = [
                    p(o)?,
                    p(dout)?,
                    p(delta)?,
                    int(rows)?,
                    int(heads)?,
                    int(head_dim)?,
                ];
                self.launch_with(name, grid_1d(rows * heads), 256, &args)
            }
            Kernel::AttentionBwdDq {
                q,
                k,
                v,
                starts,
                dout,
                lse,
                delta,
                dq,
                shape: s,
            } => {
                let args = [
                    p(q)?,
                    p(k)?,
                    p(v)?,
                    p(starts)?,
                    p(dout)?,
                    p(lse)?,
                    p(delta)?,
                    p(dq)?,
                    int(s.batch)?,
                    int(s.tq)?,
                    int(s.heads)?,
                    int(s.kv_heads)?,
                    int(s.head_dim)?,
                    F32(s.scale),
                ];
                let grid = attention_grid(s.tq, s.heads, s.batch)?;
                self.launch_with(name, grid, 256, &args)
            }
            Kernel::AttentionBwdDkdv {
                q,
                k,
                v,
                starts,
                dout,
                lse,
                delta,
                dk,
                dv,
                shape: s,
            } => {
                let args = [
                    p(q)?,
                    p(k)?,
                    p(v)?,
                    p(starts)?,
                    p(dout)?,
                    p(lse)?,
                    p(delta)?,
                    p(dk)?,
                    p(dv)?,
                    int(s.batch)?,
                    int(s.tq)?,
                    int(s.heads)?,
                    int(s.kv_heads)?,
                    int(s.head_dim)?,
                    F32(s.scale),
                ];
                let grid = attention_grid(s.tq, s.kv_heads, s.batch)?;
                self.launch_with(name, grid, 256, &args)
            }
            Kernel::CrossEntropy {
                logits,
                targets,
                losses,
                dlogits,
                rows,
                vocab,
                grad_scale,
            } => {
                let dl = match dlogits {
                    Some(v) => p(v)?,
                    None => Ptr(0),
                };
                let args = [
                    p(logits)?,
                    p(targets)?,
                    p(losses)?,
                    dl,
                    int(rows)?,
                    int(vocab)?,
                    F32(grad_scale),
                    I32(dlogits.is_some() as i32),
                ];
                self.launch_with(name, grid_rows(rows)?, 256, &args)
            }
            Kernel::Adamw {
                p: param,
                g,
                m,
                v,
                scalars: s,
            } => {
                let args = [
                    p(param)?,
                    p(g)?,
                    p(m)?,
                    p(v)?,
                    I64(param.len as i64),
                    F64(s.beta1),
                    F64(s.beta2),
                    F64(s.eps),
                    F64(s.decay),
                    F64(s.step_size),
                    F64(s.bc2_sqrt),
                    F64(s.grad_scale),
                ];
                self.launch_with(name, grid_1d(param.len), 256, &args)
            }
            Kernel::SumSquares { x, partial } => {
                let args = [p(x)?, I64(x.len as i64), p(partial)?];
                self.launch_with(name, (SUM_SQUARES_BLOCKS as u32, 1, 1), 256, &args)
            }
            Kernel::CastToAct { x, y } => {
                let args = [p(x)?, p(y)?, I64(x.len as i64)];
                self.launch_with(name, grid_1d(x.len), 256, &args)
            }
        }
    }

    fn gemm(&mut self, g: &Gemm) -> Result<()> {
        let (pa, pb, pd) = (self.ptr(g.a)?, self.ptr(g.b)?, self.ptr(g.d)?);
        let pc = g.c.map(|c| self.ptr(c)).transpose()?.unwrap_or(pd);
        let key = GemmKey {
            m: g.m,
            n: g.n,
            k: g.k,
            a_trans: g.a_trans,
            b_trans: g.b_trans,
            has_c: g.c.is_some(),
            d_act: g.d.class == Class::Act,
            align: [pa, pb, pc, pd].map(largest_alignment),
        };
        let (handle, workspace, s) = (self.lt, self.workspace_ptr, self.cu_stream());
        let plan = self.gemm_plan(key)?;
        let (alpha, beta) = (1.0f32, if g.c.is_some() { 1.0f32 } else { 0.0 });
        // SAFETY: the descriptors were made for exactly these shapes, types and alignments;
        // every pointer was checked against its buffer.
        unsafe {
            lt::matmul(
                handle,
                plan.desc,
                (&alpha) as *const f32 as *const c_void,
                (&beta) as *const f32 as *const c_void,
                pb as *const c_void,
                plan.a,
                pa as *const c_void,
                plan.b,
                pc as *const c_void,
                plan.c,
                pd as *mut c_void,
                plan.c,
                &plan.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                s as ltsys::cudaStream_t,
            )
        }
        .map_err(|e| GristError::Device(format!("cuBLASLt matmul {key:?}: {e:?}")))
    }

    fn synchronize(&mut self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error("synchronize", e))
    }

    fn memory_in_use(&self) -> Option<usize> {
        let (free, total) = self._ctx.mem_get_info().ok()?;
        Some(total - free)
    }
}

fn attention_grid(t: usize, heads: usize, batch: usize) -> Result<(u32, u32, u32)> {
    let x = u32::try_from(t.div_ceil(8).max(1))
        .map_err(|_| GristError::Usage("cuda: sequence too long".into()))?;
    if heads > 65_535 || batch > 65_535 {
        return Err(GristError::Usage(
            "cuda: more than 65,535 heads or samples in one launch".into(),
        ));
    }
    Ok((x, heads as u32, batch as u32))
}
