#!/usr/bin/env python3
"""PyTorch baseline for grist's CUDA trainer: the same Llama-style decoder, trained on random
tokens, timed on the same GPU in the same run.

Plain PyTorch (no `transformers`), Python 3.10+. Reads a grist model config (the JSON form of
`ModelConfig` in src/train/config.rs), builds the architecture grist trains, runs `--warmup`
untimed steps (torch.compile compiles there) and `--steps` timed ones, and prints ONE JSON line
to stdout:

    {"tool": "pytorch", "torch": ..., "device": ..., "params": ..., "batch": ..., "seq": ...,
     "steps": ..., "tokens_per_s": ..., "mfu": ..., "peak_memory_bytes": ...,
     "first_loss": ..., "last_loss": ..., "compile": ..., plus a few extra diagnostic fields}

Progress and diagnostics go to stderr.

tests/gpu/llama-124m.json (vocab 32768, hidden 768, MLP 2560, 12 layers, 12 heads, tied
embeddings) has 124,275,456 parameters by grist's formula (ModelConfig::checked_parameter_count):
    per layer 2·d + 2·d·(H·hd) + 2·d·(KV·hd) + 3·d·f = 1,536 + 1,179,648 + 1,179,648 + 5,898,240
              = 8,259,072
    embed vocab·d = 25,165,824; 12 layers = 99,108,864; final norm d = 768; head 0 (tied)
    total 124,275,456.
The script checks that the model it builds has exactly grist's count.

The model (matching grist's src/train/{params,rope}.rs and transformers' LlamaForCausalLM):
    token embedding; per layer x += o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))));
    x += down(silu(gate(n2(x))) * up(n2(x))); final RMSNorm; output projection (the embedding
    when tied). No biases. RMSNorm in float32 (transformers' LlamaRMSNorm). RoPE in the
    rotate_half layout (dim i pairs with i + head_dim/2, inv_freq = 1/theta^(2i/head_dim)),
    angles formed in float64 like grist's. Causal attention through
    F.scaled_dot_product_attention(is_causal=True), flash backend on CUDA; GQA when
    num_kv_heads < num_heads. Init: normal(0, 0.02) for matrices and the embedding, o_proj and
    down_proj with 0.02/sqrt(2·layers), norms at 1.

The step: bf16 autocast over f32 master weights, mean cross-entropy over every token (inputs
are uniform random tokens, targets the inputs shifted by one: seq+1 tokens drawn per sample),
backward, clip_grad_norm_(1.0), AdamW(lr 3e-4, betas (0.9, 0.95), weight decay 0.1, eps 1e-8,
fused on CUDA), zero_grad(set_to_none=True). As in grist (AdamWConfig's default
decay_norms_and_embeddings = false) the weight decay applies to the matrices only, not to the
norms or the (tied) embedding; this changes no timing.

Examples:
    python tests/gpu/torch_bench.py --config tests/gpu/llama-124m.json             # on CUDA
    python tests/gpu/torch_bench.py --config tests/gpu/llama-124m.json --batch 1 --seq 32768
    python tests/gpu/torch_bench.py --config tiny.json --device cpu --batch 2 --seq 32 \\
        --steps 3 --warmup 1                                                     # dry run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def log(*args: object) -> None:
    print("[torch_bench]", *args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Config


class Config:
    """The fields of grist's ModelConfig, with its defaults and its validation (the subset the
    benchmark needs)."""

    KNOWN = {
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "norm_eps",
        "rope",
        "tie_embeddings",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
    }

    def __init__(self, raw: dict) -> None:
        unknown = sorted(set(raw) - self.KNOWN)
        if unknown:
            raise SystemExit(f"config: unknown field(s) {unknown} (grist's ModelConfig denies them)")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            if name not in raw:
                raise SystemExit(f"config: missing required field `{name}`")
        self.vocab_size = int(raw["vocab_size"])
        self.hidden_size = int(raw["hidden_size"])
        self.intermediate_size = int(raw["intermediate_size"])
        self.num_layers = int(raw["num_layers"])
        self.num_heads = int(raw["num_heads"])
        kv = raw.get("num_kv_heads")
        self.num_kv_heads = int(kv) if kv is not None else self.num_heads
        hd = raw.get("head_dim")
        self.head_dim = int(hd) if hd is not None else self.hidden_size // max(self.num_heads, 1)
        self.norm_eps = float(raw.get("norm_eps", 1e-5))
        rope = raw.get("rope") or {}
        unknown = sorted(set(rope) - {"theta", "scaling"})
        if unknown:
            raise SystemExit(f"config: unknown rope field(s) {unknown}")
        self.rope_theta = float(rope.get("theta", 10000.0))
        scaling = rope.get("scaling")
        if scaling is not None:
            kind = scaling.get("type") if isinstance(scaling, dict) else scaling
            if kind != "none":
                raise SystemExit(
                    f"config: rope.scaling {kind!r} is not supported by this benchmark (only "
                    '"none"); drop rope.scaling to benchmark the same shape (the scaling only '
                    "changes RoPE's frequencies, not the work per step)"
                )
        self.tie_embeddings = bool(raw.get("tie_embeddings", False))
        self.max_position_embeddings = int(raw.get("max_position_embeddings", 2048))

        problems = []
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be at least 1")
        if self.num_kv_heads >= 1 and self.num_heads % self.num_kv_heads != 0:
            problems.append(f"num_kv_heads: {self.num_kv_heads} does not divide num_heads {self.num_heads}")
        if hd is None and self.num_heads >= 1 and self.hidden_size % self.num_heads != 0:
            problems.append(f"num_heads: {self.num_heads} does not divide hidden_size {self.hidden_size}; set head_dim")
        if self.head_dim % 2 != 0:
            problems.append(f"head_dim: {self.head_dim} must be even (RoPE rotates pairs)")
        if not (0.0 < self.norm_eps <= 1.0):
            problems.append(f"norm_eps: {self.norm_eps} must be in (0, 1]")
        if not (self.rope_theta > 1.0 and math.isfinite(self.rope_theta)):
            problems.append(f"rope.theta: {self.rope_theta} must be a finite number above 1")
        if problems:
            raise SystemExit("config: " + "; ".join(problems))

    def grist_parameter_count(self) -> int:
        """grist's ModelConfig::checked_parameter_count, term for term."""
        d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
        q = self.num_heads * hd
        kv = self.num_kv_heads * hd
        layer = d * 2 + d * q * 2 + d * kv * 2 + d * f * 3
        embed = self.vocab_size * d
        head = 0 if self.tie_embeddings else embed
        return embed + self.num_layers * layer + d + head


# --------------------------------------------------------------------------------------------
# Model


class RMSNorm(nn.Module):
    """transformers' LlamaRMSNorm: normalised in float32, cast back, times the weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, heads, T, hd]; cos, sin: [T, hd] (float32), cast to x's dtype like transformers.
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


def _sdpa_has_enable_gqa() -> bool:
    try:
        q = torch.zeros(1, 2, 1, 2)
        kv = torch.zeros(1, 1, 1, 2)
        F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


class Attention(nn.Module):
    def __init__(self, cfg: Config, gqa_native: bool) -> None:
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.h, self.kv, self.hd = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self.gqa_native = gqa_native

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if self.kv != self.h:
            if self.gqa_native:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                rep = self.h // self.kv
                k = k.repeat_interleave(rep, dim=1)
                v = v.repeat_interleave(rep, dim=1)
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(b, t, self.h * self.hd)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: Config, gqa_native: bool) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.self_attn = Attention(cfg, gqa_native)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class Llama(nn.Module):
    """Returns the mean cross-entropy loss (computed inside forward so that the [B·T, vocab]
    logits, and their float32 upcast, are temporaries of the forward, never held by the
    caller)."""

    def __init__(self, cfg: Config, seq: int, gqa_native: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, gqa_native) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # RoPE tables for positions 0..seq-1, angles in float64 (as grist forms them).
        hd = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        angles = torch.outer(torch.arange(seq, dtype=torch.float64), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        self.register_buffer("rope_cos", emb.cos().float(), persistent=False)
        self.register_buffer("rope_sin", emb.sin().float(), persistent=False)

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        residual_std = std / math.sqrt(2.0 * max(self.cfg.num_layers, 1))
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                p.normal_(0.0, residual_std)
            else:  # q, k, v, gate, up, the embedding, an untied lm_head
                p.normal_(0.0, std)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        t = inputs.shape[1]
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.embed_tokens(inputs)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        logits = self.lm_head(x)  # bf16 under autocast
        # cross_entropy upcasts to float32 (autocast's fp32 list); the upcast lives only inside it.
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1))


# --------------------------------------------------------------------------------------------
# FLOPs


def peak_bf16_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU (no sparsity), from its name."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and "PCIe" in name:
        return 756e12
    if "H100" in name:
        return 989.4e12
    if "H200" in name:
        return 989.4e12
    if "A100" in name:
        return 312e12
    cap = torch.cuda.get_device_capability(device)
    if cap == (9, 0):
        return 989.4e12
    if cap == (8, 0):
        return 312e12
    return None


def flops_per_token(cfg: Config, n_params_all: int, seq: int) -> int:
    """Training FLOPs per token. THIS MUST STAY EQUAL TO GRIST'S MFU FORMULA (grist reports MFU
    with exactly this; change both or neither):
        6·N + 6·L·H·hd·T
    N = the parameters excluding the input embedding when the embeddings are untied (a lookup,
    no matmul); when tied, N = all parameters (the embedding is the output projection's
    matmul). L layers, H query heads, hd head_dim, T = seq. The attention term is causal
    attention: half of the 12·L·H·hd·T of a full attention (QKᵀ and AV, forward + backward)."""
    n = n_params_all if cfg.tie_embeddings else n_params_all - cfg.vocab_size * cfg.hidden_size
    return 6 * n + 6 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="grist model config JSON (ModelConfig)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compile happens here)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", default=None, help="also write the result here")
    p.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for cuda, off for cpu)")
    p.add_argument("--autocast", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast (default on; on cpu it is dropped if bf16 fails there)")
    p.add_argument("--sdpa", choices=["flash", "auto"], default="flash",
                   help="CUDA attention backend: only flash (default) or PyTorch's own choice")
    p.add_argument("--gqa", choices=["auto", "native", "repeat"], default="auto",
                   help="GQA (num_kv_heads < num_heads): SDPA's enable_gqa (native), k/v heads "
                        "repeated (repeat), or native where this torch has it (auto)")
    a = p.parse_args(argv)
    for name in ("batch", "seq", "steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with open(args.config) as fh:
        cfg = Config(json.load(fh))

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch (use --device cpu for a dry run)")
    device = torch.device(args.device)
    is_cuda = device.type == "cuda"
    use_compile = is_cuda if args.compile is None else args.compile
    if args.seq > cfg.max_position_embeddings:
        log(f"note: --seq {args.seq} is past max_position_embeddings {cfg.max_position_embeddings} "
            "(RoPE is computed for every position; timing is unaffected)")

    grouped = cfg.num_kv_heads != cfg.num_heads
    gqa_native = grouped and args.gqa != "repeat" and (args.gqa == "native" or _sdpa_has_enable_gqa())

    torch.manual_seed(args.seed)
    torch.set_float32_matmul_precision("high")
    if is_cuda:
        torch.cuda.manual_seed_all(args.seed)
        if args.sdpa == "flash":
            # Flash only: an error rather than a silent fallback to a slower kernel.
            torch.backends.cuda.enable_flash_sdp(True)
            torch.backends.cuda.enable_mem_efficient_sdp(False)
            torch.backends.cuda.enable_math_sdp(False)
            if hasattr(torch.backends.cuda, "enable_cudnn_sdp"):
                torch.backends.cuda.enable_cudnn_sdp(False)

    model = Llama(cfg, args.seq, gqa_native)
    model.init_weights(0.02)
    model.to(device)

    n_params = sum(p.numel() for p in model.parameters())  # a tied weight counted once
    grist_n = cfg.grist_parameter_count()
    if n_params != grist_n:
        raise SystemExit(f"parameter count {n_params} differs from grist's formula {grist_n}")
    log(f"torch {torch.__version__}, device {device}, params {n_params:,} (= grist's count), "
        f"L={cfg.num_layers} d={cfg.hidden_size} H={cfg.num_heads} KV={cfg.num_kv_heads} "
        f"hd={cfg.head_dim} f={cfg.intermediate_size} vocab={cfg.vocab_size} tied={cfg.tie_embeddings}"
        + (f" gqa={'enable_gqa' if gqa_native else 'repeat_interleave'}" if grouped else ""))

    # Weight decay on the matrices only, as grist (decay_norms_and_embeddings: false).
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied lm_head.weight is not listed again
        (no_decay if name.endswith("norm.weight") or name == "embed_tokens.weight" else decay).append(p)
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    opt_kwargs = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    if is_cuda:
        opt_kwargs["fused"] = True
    optimizer = torch.optim.AdamW(groups, **opt_kwargs)

    use_autocast = args.autocast
    fwd = torch.compile(model, dynamic=False) if use_compile else model

    # Every batch drawn up front: seq+1 uniform tokens per sample, targets = inputs shifted.
    total = args.warmup + args.steps
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    data = torch.randint(0, cfg.vocab_size, (total, args.batch, args.seq + 1), device=device,
                         generator=gen, dtype=torch.long)

    def step(i: int) -> torch.Tensor:
        # Fresh contiguous tensors (offset 0, same strides every step: no recompile guards).
        inputs, targets = data[i, :, :-1].contiguous(), data[i, :, 1:].contiguous()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_autocast):
            loss = fwd(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    if use_autocast and not is_cuda:
        # bf16 autocast on cpu: keep it if one forward works, else run in float32.
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(data[0, :1, :-1], data[0, :1, 1:])
        except Exception as e:  # noqa: BLE001 - any failure means "not on this build"
            log(f"bf16 autocast does not work on cpu here ({type(e).__name__}: {e}); using float32")
            use_autocast = False

    def sync() -> None:
        if is_cuda:
            torch.cuda.synchronize(device)

    losses: list[torch.Tensor] = []
    t_warm = time.perf_counter()
    for i in range(args.warmup):
        t0 = time.perf_counter()
        losses.append(step(i))
        loss_i = losses[-1].item()  # syncs; warmup is untimed
        log(f"warmup {i + 1}/{args.warmup}: loss {loss_i:.4f} ({time.perf_counter() - t0:.2f} s)")
    sync()
    warmup_seconds = time.perf_counter() - t_warm
    if args.warmup:
        log(f"warmup done in {warmup_seconds:.1f} s"
            + (" (includes torch.compile)" if use_compile else ""))

    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    for i in range(args.warmup, total):
        losses.append(step(i))  # no .item() here: no host sync inside the timed loop
    sync()
    seconds = time.perf_counter() - t0

    loss_values = [x.item() for x in losses]
    for i in range(args.warmup, total):
        log(f"step {i + 1 - args.warmup}/{args.steps}: loss {loss_values[i]:.4f}")
    if not all(math.isfinite(x) for x in loss_values):
        log("WARNING: a loss is not finite")

    tokens_per_s = args.batch * args.seq * args.steps / seconds
    fpt = flops_per_token(cfg, n_params, args.seq)
    peak = peak_bf16_flops(device)
    mfu = tokens_per_s * fpt / peak if peak else None
    peak_mem = torch.cuda.max_memory_allocated(device) if is_cuda else None
    log(f"{args.steps} steps in {seconds:.3f} s: {tokens_per_s:,.0f} tokens/s"
        + (f", MFU {mfu:.1%}" if mfu is not None else "")
        + (f", peak memory {peak_mem / 2**30:.2f} GiB" if peak_mem is not None else "")
        + f"; loss at step 0 {loss_values[0]:.4f} (ln vocab = {math.log(cfg.vocab_size):.4f})")

    result = {
        "tool": "pytorch",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if is_cuda else "cpu",
        "params": n_params,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu,
        "peak_memory_bytes": peak_mem,
        "first_loss": loss_values[0],
        "last_loss": loss_values[-1],
        "compile": use_compile,
        # Extras, for reading the numbers.
        "config": os.path.basename(args.config),
        "warmup": args.warmup,
        "warmup_seconds": warmup_seconds,
        "seconds": seconds,
        "flops_per_token": fpt,
        "peak_flops": peak,
        "autocast_bf16": use_autocast,
        "sdpa": args.sdpa if is_cuda else "auto",
    }
    line = json.dumps(result)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
