//! GEMMs through cuBLASLt: row-major `d = a·b (+c)` as cuBLASLt's column-major `dᵀ = bᵀ·aᵀ`,
//! bf16 or f32 operands with f32 accumulation; each shape's algorithm, for its operands'
//! alignments, chosen once by cuBLASLt's heuristic and kept.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublaslt::{result as lt, sys as ltsys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

use super::super::device::{Class, Gemm};
use crate::error::{GristError, Result};
use crate::train::config::Precision;

/// cuBLASLt's workspace (what NVIDIA recommends for Hopper).
pub const WORKSPACE_BYTES: usize = 32 << 20;

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

/// cuBLASLt descriptors, destroyed when dropped: a plan's, or a half-made plan's when making it
/// failed part-way.
#[derive(Default)]
struct LtObjects {
    layouts: Vec<ltsys::cublasLtMatrixLayout_t>,
    desc: Option<ltsys::cublasLtMatmulDesc_t>,
    pref: Option<ltsys::cublasLtMatmulPreference_t>,
}

impl Drop for LtObjects {
    fn drop(&mut self) {
        // SAFETY: each object was made by cuBLASLt, is owned here alone and destroyed once.
        unsafe {
            for l in self.layouts.drain(..) {
                let _ = lt::destroy_matrix_layout(l);
            }
            if let Some(d) = self.desc.take() {
                let _ = lt::destroy_matmul_desc(d);
            }
            if let Some(p) = self.pref.take() {
                let _ = lt::destroy_matmul_pref(p);
            }
        }
    }
}

/// A GEMM shape's descriptors (layouts A, B and C = D) and the algorithm chosen for it.
struct GemmPlan {
    objects: LtObjects,
    algo: ltsys::cublasLtMatmulAlgo_t,
}

impl GemmPlan {
    fn desc(&self) -> ltsys::cublasLtMatmulDesc_t {
        self.objects.desc.expect("a plan has its descriptor")
    }

    fn layout(&self, i: usize) -> ltsys::cublasLtMatrixLayout_t {
        self.objects.layouts[i]
    }
}

/// The cuBLASLt handle, its workspace and the plans made so far.
pub struct Lt {
    handle: ltsys::cublasLtHandle_t,
    _workspace: CudaSlice<u8>,
    workspace_ptr: u64,
    plans: HashMap<GemmKey, GemmPlan>,
    precision: Precision,
}

impl Lt {
    pub fn new(stream: &Arc<CudaStream>, precision: Precision) -> Result<Lt> {
        // SAFETY: a plain device allocation, written by cuBLASLt only.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }
            .map_err(|e| GristError::Device(format!("CUDA driver: workspace: {e:?}")))?;
        let workspace_ptr = {
            let (p, _sync) = workspace.device_ptr(stream);
            p
        };
        if workspace_ptr % 256 != 0 {
            return Err(GristError::Device(format!(
                "cuBLASLt's workspace at {workspace_ptr:#x} is not 256-byte aligned"
            )));
        }
        let handle =
            lt::create_handle().map_err(|e| GristError::Device(format!("cuBLASLt: {e:?}")))?;
        Ok(Lt {
            handle,
            _workspace: workspace,
            workspace_ptr,
            plans: HashMap::new(),
            precision,
        })
    }

    fn gemm_plan(&mut self, key: GemmKey) -> Result<&GemmPlan> {
        if !self.plans.contains_key(&key) {
            let plan = self.make_gemm_plan(key)?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
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
        let mut objects = LtObjects::default();
        // cuBLASLt's A = our b: stored [k, n] row-major is column-major [n, k] (ld n), op N;
        // stored [n, k] is column-major [k, n] (ld k), op T.
        let a = if key.b_trans {
            lt::create_matrix_layout(op_type, k, n, k as i64)
        } else {
            lt::create_matrix_layout(op_type, n, k, n as i64)
        }
        .map_err(|e| err("layout A", e))?;
        objects.layouts.push(a);
        // cuBLASLt's B = our a: stored [m, k] is column-major [k, m] (ld k), op N; stored
        // [k, m] is column-major [m, k] (ld m), op T.
        let b = if key.a_trans {
            lt::create_matrix_layout(op_type, m, k, m as i64)
        } else {
            lt::create_matrix_layout(op_type, k, m, k as i64)
        }
        .map_err(|e| err("layout B", e))?;
        objects.layouts.push(b);
        let c = lt::create_matrix_layout(d_type, n, m, n as i64).map_err(|e| err("layout C", e))?;
        objects.layouts.push(c);
        let desc = lt::create_matmul_desc(
            ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ltsys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(|e| err("descriptor", e))?;
        objects.desc = Some(desc);
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
        objects.pref = Some(pref);
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
        let heuristic =
            unsafe { lt::get_matmul_algo_heuristic(self.handle, desc, a, b, c, c, pref) }
                .map_err(|e| err("no algorithm", e))?;
        // The preference is only needed to choose; the plan keeps the rest.
        // SAFETY: made above, used no more.
        let _ = unsafe { lt::destroy_matmul_pref(pref) };
        objects.pref = None;
        Ok(GemmPlan {
            objects,
            algo: heuristic.algo,
        })
    }

    /// Queues `g` on `stream`, its views at device addresses `[a, b, c (or d), d]`.
    pub fn matmul(&mut self, g: &Gemm, ptrs: [u64; 4], stream: ltsys::cudaStream_t) -> Result<()> {
        let [pa, pb, pc, pd] = ptrs;
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
        let (handle, workspace) = (self.handle, self.workspace_ptr);
        let plan = self.gemm_plan(key)?;
        let (alpha, beta) = (1.0f32, if g.c.is_some() { 1.0f32 } else { 0.0 });
        // SAFETY: the descriptors were made for exactly these shapes, types and alignments;
        // every pointer was checked against its buffer by the caller.
        unsafe {
            lt::matmul(
                handle,
                plan.desc(),
                (&alpha) as *const f32 as *const c_void,
                (&beta) as *const f32 as *const c_void,
                pb as *const c_void,
                plan.layout(0),
                pa as *const c_void,
                plan.layout(1),
                pc as *const c_void,
                plan.layout(2),
                pd as *mut c_void,
                plan.layout(2),
                &plan.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream,
            )
        }
        .map_err(|e| GristError::Device(format!("cuBLASLt matmul {key:?}: {e:?}")))
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // The owner synchronises its stream first. The plans' descriptors go with `plans`.
        // SAFETY: the handle is not used after this.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

fn largest_alignment(ptr: u64) -> u32 {
    (1u64 << ptr.trailing_zeros().min(8)) as u32
}
