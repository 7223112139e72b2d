#!/usr/bin/env python3
"""Golden logits / loss / gradients of a tiny Llama from PyTorch + transformers, for grist's CPU trainer.

Run with the megatron venv after tests/parity/train_venv.sh:

    ~/.cache/grist/megatron-venv/bin/python tests/parity/train_goldens.py [--out tests/fixtures/train]

Writes (tests/fixtures/train/README.md describes them):
    hf_tiny/config.json, hf_tiny/model.safetensors   the model, float32 weights (save_pretrained)
    batch.json                                       input_ids / targets / doc_ids / positions_reset, B=2, T=24
    golden_{rope}_{mask}.safetensors                 rope in none|linear|ntk|yarn|llama3, mask in causal|document

Model: LlamaForCausalLM, vocab 64, hidden 32, intermediate 64, 2 layers, 2 query heads, 1 KV head (GQA),
head_dim 16, RMSNorm eps 1e-5, untied lm_head, no biases, SiLU MLP, eager attention. Init:
torch.manual_seed(0), then over model.named_parameters() in order: Linear / Embedding weights
~ N(0, 0.2), RMSNorm weights = 1 + 0.1 * N(0, 1). Every golden uses these same weights, loaded from
hf_tiny/ into a model whose config differs only in `rope_parameters`.

Goldens are computed with model.double() (float64) and stored as float32. Note that transformers'
float64 path still rounds through float32 in three places: RMSNorm (`hidden_states.to(torch.float32)`),
the attention softmax (`softmax(..., dtype=torch.float32)`) and RoPE (inv_freq is computed in float32
and cos/sin are taken in float32, then cast to float64). The goldens are therefore float32-accurate
(relative error ~1e-7), which is all a float32 trainer can be compared at anyway.

Loss = F.cross_entropy(logits.view(-1, 64), targets.view(-1), ignore_index=-100): the mean over the
targets that are not -100 (here 45 of 48). Gradients are d(loss)/d(param) for every parameter.

Masks:
  causal    position_ids = 0..23 in each row, the standard causal mask (attention_mask=None).
  document  position_ids = positions_reset (position within the document), and a 4-D additive float
            mask [B, 1, T, T] in the model dtype: 0 where key j <= query i and doc_ids[j] == doc_ids[i],
            torch.finfo(float64).min elsewhere. transformers 5.23's masking_utils._preprocess_mask_arguments
            returns any 4-D tensor mask as-is ("If the mask is already 4D, simply return as-is"), and
            eager attention adds it to the scores. This script checks that (the mask object comes back
            unchanged from create_causal_mask), that each document's logits equal those of that document
            run alone, that changing one document's tokens leaves the other documents' logits bit-equal,
            and that transformers' own packed-sequence detection (attention_mask=None with reset
            position_ids) gives the same logits.

RoPE, exactly as transformers 5.23 computes it (modeling_rope_utils.py, models/llama/modeling_llama.py).
d = head_dim = 16, i = 0 .. d/2-1, theta = rope_theta, L = original_max_position_embeddings.
  Common to every type: base inv_freq_i = 1 / theta^(2i/d), computed in float32
      (`1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))`).
      forward: freqs[b,t,i] = float32(position_ids[b,t]) * inv_freq_i; emb = cat(freqs, freqs) over the last
      dim (so component j pairs with j + d/2: the "rotate_half" layout, NOT interleaved pairs);
      cos = cos(emb) * attention_scaling, sin = sin(emb) * attention_scaling, cast to the model dtype;
      q' = q*cos + rotate_half(q)*sin, k' = k*cos + rotate_half(k)*sin, rotate_half(x) = cat(-x[d/2:], x[:d/2]);
      scores = q'.k'^T * d^-0.5 + mask. attention_scaling is 1.0 for every type except yarn.
  none   (HF rope_type "default"): inv_freq_i = 1 / theta^(2i/d).
  linear (HF "linear"): inv_freq_i = (1 / theta^(2i/d)) / factor.
  ntk    grist's *static* NTK-aware scaling. transformers only has the dynamic variant ("dynamic", which
         rescales only when the sequence is longer than max_position_embeddings), so the HF model here
         is the "default" type with theta' = theta * factor^(d / (d - 2)): inv_freq_i = 1 / theta'^(2i/d).
  yarn   (HF "yarn"), with no attention_factor / mscale / mscale_all_dim given:
         pos_freqs_i = theta^(2i/d); extrap_i = 1 / pos_freqs_i; interp_i = 1 / (factor * pos_freqs_i)
         corr_dim(r) = d * ln(L / (r * 2*pi)) / (2 * ln(theta))
         low = corr_dim(beta_fast), high = corr_dim(beta_slow); `truncate` defaults to True:
         low = floor(low), high = ceil(high); then low = max(low, 0), high = min(high, d - 1)
         if low == high: high += 0.001
         ramp_i = clamp((i - low) / (high - low), 0, 1)          (float32, i = 0 .. d/2-1)
         inv_freq_i = interp_i * ramp_i + extrap_i * (1 - ramp_i)
         attention_scaling = 0.1 * ln(factor) + 1.0 (1.0 if factor <= 1), multiplied into BOTH cos and sin,
         so q'.k' carries attention_scaling^2. `factor` is the config value (transformers only derives it
         from max_position_embeddings / L when factor is None; here it warns that 64/8 != 4 and uses 4).
         beta_fast / beta_slow default to 32 / 1. With this config (d=16, theta=1e4, L=8): low = 0, high = 1,
         so ramp = [0, 1, 1, ...]: inv_freq_0 is kept, the other 7 are divided by factor.
  llama3 (HF "llama3"): inv_i = 1 / theta^(2i/d), wavelen_i = 2*pi / inv_i,
         low_freq_wavelen = L / low_freq_factor, high_freq_wavelen = L / high_freq_factor;
         wavelen_i > low_freq_wavelen:  inv_freq_i = inv_i / factor
         wavelen_i < high_freq_wavelen: inv_freq_i = inv_i
         otherwise (boundaries included): s = (L / wavelen_i - low_freq_factor) / (high_freq_factor - low_freq_factor),
                                          inv_freq_i = (1 - s) * inv_i / factor + s * inv_i
This script re-derives inv_freq and attention_scaling from these formulas in float64 and asserts they
match the model's. Each golden also carries "rope.inv_freq" (the float32 values the model used) and
the metadata "attention_scaling", to debug a RoPE mismatch in isolation.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging
from transformers.masking_utils import create_causal_mask
from transformers.models.llama.modeling_llama import LlamaRMSNorm

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

VOCAB, B, T = 64, 2, 24
HEAD_DIM = 16
THETA = 10000.0
BASE_CONFIG = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=HEAD_DIM,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    max_position_embeddings=64,
    attention_bias=False,
    mlp_bias=False,
    hidden_act="silu",
    pad_token_id=None,  # a padding_idx would zero that embedding row's gradient
)
DOC_LENGTHS = [[10, 14], [5, 12, 7]]
IGNORED_TAIL = 3  # row 1's last 3 targets are -100
WEIGHT_SEED = 0
BATCH_SEED = 1234

# grist's RoPE spec (stored verbatim, as JSON, in each golden's metadata under "rope").
ROPES = {
    "none": {"theta": THETA, "scaling": {"type": "none"}},
    "linear": {"theta": THETA, "scaling": {"type": "linear", "factor": 2.0}},
    "ntk": {"theta": THETA, "scaling": {"type": "ntk", "factor": 4.0}},
    "yarn": {"theta": THETA, "scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                                         "beta_fast": 32.0, "beta_slow": 1.0}},
    "llama3": {"theta": THETA, "scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8}},
}
MASKS = ("causal", "document")


def hf_rope_parameters(spec: dict) -> dict:
    """grist's RoPE spec -> transformers 5.x `rope_parameters`."""
    theta, s = spec["theta"], spec["scaling"]
    kind = s["type"]
    if kind == "none":
        return {"rope_type": "default", "rope_theta": theta}
    if kind == "linear":
        return {"rope_type": "linear", "rope_theta": theta, "factor": s["factor"]}
    if kind == "ntk":
        # Static NTK-aware scaling: transformers has only the *dynamic* NTK variant ("dynamic"), so build
        # the default RoPE with the effective base theta * factor^(d / (d - 2)).
        return {"rope_type": "default", "rope_theta": theta * s["factor"] ** (HEAD_DIM / (HEAD_DIM - 2))}
    if kind == "yarn":
        return {"rope_type": "yarn", "rope_theta": theta, "factor": s["factor"],
                "original_max_position_embeddings": s["original_max_position_embeddings"],
                "beta_fast": s["beta_fast"], "beta_slow": s["beta_slow"]}
    if kind == "llama3":
        return {"rope_type": "llama3", "rope_theta": theta, "factor": s["factor"],
                "low_freq_factor": s["low_freq_factor"], "high_freq_factor": s["high_freq_factor"],
                "original_max_position_embeddings": s["original_max_position_embeddings"]}
    raise ValueError(kind)


def expected_rope(spec: dict) -> tuple[list[float], float]:
    """The docstring's formulas in float64: (inv_freq[d/2], attention_scaling)."""
    theta, s = spec["theta"], spec["scaling"]
    d, kind = HEAD_DIM, s["type"]
    idx = range(d // 2)
    if kind == "ntk":
        theta = theta * s["factor"] ** (d / (d - 2))
    base = [1.0 / theta ** (2 * i / d) for i in idx]
    if kind in ("none", "ntk"):
        return base, 1.0
    if kind == "linear":
        return [f / s["factor"] for f in base], 1.0
    if kind == "yarn":
        factor, L = s["factor"], s["original_max_position_embeddings"]

        def corr_dim(r):
            return d * math.log(L / (r * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(corr_dim(s["beta_fast"])), 0)
        high = min(math.ceil(corr_dim(s["beta_slow"])), d - 1)
        if low == high:
            high += 0.001
        out = []
        for i in idx:
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            out.append(base[i] / factor * ramp + base[i] * (1 - ramp))
        return out, (0.1 * math.log(factor) + 1.0) if factor > 1 else 1.0
    if kind == "llama3":
        factor, L = s["factor"], s["original_max_position_embeddings"]
        lo, hi = s["low_freq_factor"], s["high_freq_factor"]
        out = []
        for f in base:
            wavelen = 2 * math.pi / f
            if wavelen > L / lo:
                out.append(f / factor)
            elif wavelen < L / hi:
                out.append(f)
            else:
                sm = (L / wavelen - lo) / (hi - lo)
                out.append((1 - sm) * f / factor + sm * f)
        return out, 1.0
    raise ValueError(kind)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    """safetensors.torch.save_file, but byte-reproducible: save_file orders the metadata map at random
    (a Rust HashMap), which would change the fixtures' bytes on every run. Same format: u64 LE header
    length, JSON header (sorted keys, padded with spaces to 8 bytes), then the raw little-endian data."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        assert t.dtype == torch.float32 and sys.byteorder == "little", (name, t.dtype)
        data = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))
    back = load_file(path)  # the reference reader must read it back exactly
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors), path
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata, path


def make_base_model() -> LlamaForCausalLM:
    cfg = LlamaConfig(**BASE_CONFIG, rope_parameters=hf_rope_parameters(ROPES["none"]))
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).to(torch.float32)
    norm_params = {f"{mname}.weight" for mname, mod in model.named_modules() if isinstance(mod, LlamaRMSNorm)}
    torch.manual_seed(WEIGHT_SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in norm_params:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, dtype=torch.float32))
            else:
                assert name.endswith(("proj.weight", "embed_tokens.weight", "lm_head.weight")), name
                p.normal_(0.0, 0.2)
    return model


def make_batch() -> dict:
    g = torch.Generator().manual_seed(BATCH_SEED)
    tokens = torch.randint(0, VOCAB, (B, T + 1), generator=g)
    input_ids = tokens[:, :T].tolist()
    targets = tokens[:, 1:].tolist()
    targets[1][T - IGNORED_TAIL:] = [-100] * IGNORED_TAIL
    doc_ids, positions = [], []
    for lengths in DOC_LENGTHS:
        assert sum(lengths) == T
        doc_ids.append([d for d, n in enumerate(lengths) for _ in range(n)])
        positions.append([p for n in lengths for p in range(n)])
    return {"input_ids": input_ids, "targets": targets, "doc_ids": doc_ids, "positions_reset": positions}


def document_mask(doc_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] additive mask: 0 where key j <= query i in the same document, finfo.min elsewhere."""
    t = doc_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    allowed = (causal[None] & same_doc)[:, None]
    return torch.where(allowed, torch.zeros((), dtype=dtype), torch.finfo(dtype).min)


def load_variant(hf_dir: str, rope_name: str) -> LlamaForCausalLM:
    cfg = LlamaConfig(**BASE_CONFIG, rope_parameters=hf_rope_parameters(ROPES[rope_name]))
    model = LlamaForCausalLM.from_pretrained(hf_dir, config=cfg, dtype=torch.float32, attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    saved = load_file(os.path.join(hf_dir, "model.safetensors"))
    state = model.state_dict()
    assert set(saved) == set(state), (sorted(saved), sorted(state))
    for k, v in saved.items():
        assert torch.equal(state[k], v), f"{rope_name}: {k} differs from hf_tiny"
    return model.double().eval()


def check_rope(model: LlamaForCausalLM, rope_name: str) -> None:
    rot = model.model.rotary_emb
    want_inv, want_scale = expected_rope(ROPES[rope_name])
    got = rot.inv_freq.double()
    want = torch.tensor(want_inv, dtype=torch.float64)
    rel = ((got - want).abs() / want).max().item()
    assert rel < 1e-6, (rope_name, got.tolist(), want_inv)
    assert abs(rot.attention_scaling - want_scale) < 1e-12, (rope_name, rot.attention_scaling, want_scale)


def forward(model, input_ids, position_ids, attention_mask):
    return model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                 use_cache=False).logits


def check_document_mask(model, rope_name, ids, pos_reset, doc_ids, mask, logits_doc):
    """The 4-D mask is used as-is and really isolates documents."""
    # 1. transformers hands a 4-D mask through untouched.
    emb = model.model.embed_tokens(ids)
    got = create_causal_mask(config=model.config, inputs_embeds=emb, attention_mask=mask,
                             past_key_values=None, position_ids=pos_reset)
    assert got is mask, "create_causal_mask did not return the 4-D mask as-is"
    with torch.no_grad():
        # 2. Every document's logits equal those of the document run alone (positions 0.., causal), up to
        #    the float32 rounding inside transformers' float64 path (different shapes, different sums).
        for b, lengths in enumerate(DOC_LENGTHS):
            start = 0
            for n in lengths:
                alone = forward(model, ids[b:b + 1, start:start + n], torch.arange(n)[None], None)[0]
                diff = (alone - logits_doc[b, start:start + n]).abs().max().item()
                assert diff < 1e-5, (rope_name, b, start, diff)
                start += n
        # 3. Changing document 0's tokens leaves the later documents' logits bit-equal (and does change
        #    document 0's); under the plain causal mask the later documents do change.
        first = torch.tensor([lengths[0] for lengths in DOC_LENGTHS])
        in_doc0 = doc_ids == 0
        ids2 = torch.where(in_doc0, (ids + 1 + torch.arange(T)[None]) % VOCAB, ids)
        assert not torch.equal(ids2, ids)
        l2 = forward(model, ids2, pos_reset, mask)
        for b in range(B):
            f = first[b].item()
            assert torch.equal(l2[b, f:], logits_doc[b, f:]), (rope_name, b, "later documents changed")
            assert (l2[b, :f] - logits_doc[b, :f]).abs().max().item() > 1e-3, (rope_name, b)
        pos_causal = torch.arange(T)[None].expand(B, T)
        c1 = forward(model, ids, pos_causal, None)
        c2 = forward(model, ids2, pos_causal, None)
        for b in range(B):
            f = first[b].item()
            assert (c2[b, f:] - c1[b, f:]).abs().max().item() > 1e-3, (rope_name, b, "causal control")
        # 4. transformers' own packed-sequence detection (no mask, reset positions) agrees.
        packed = forward(model, ids, pos_reset, None)
        diff = (packed - logits_doc).abs().max().item()
        assert diff < 1e-12, (rope_name, "packed-sequence path", diff)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "train"))
    args = ap.parse_args()
    out = args.out
    hf_dir = os.path.join(out, "hf_tiny")
    os.makedirs(hf_dir, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)

    base = make_base_model()
    base.save_pretrained(hf_dir)
    del base
    for f in sorted(os.listdir(hf_dir)):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(hf_dir, f))  # e.g. generation_config.json: not needed

    batch = make_batch()
    with open(os.path.join(out, "batch.json"), "w") as f:
        f.write("{\n" + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in batch.items()) + "\n}\n")

    ids = torch.tensor(batch["input_ids"])
    targets = torch.tensor(batch["targets"])
    doc_ids = torch.tensor(batch["doc_ids"])
    pos_reset = torch.tensor(batch["positions_reset"])
    pos_causal = torch.arange(T)[None].expand(B, T).contiguous()
    versions = {d: md.version(d) for d in ("torch", "transformers")}

    all_logits = {}
    print(f"{'rope':<8} {'mask':<9} {'loss':>12}  attn_scaling  inv_freq")
    for rope_name in ROPES:
        model = load_variant(hf_dir, rope_name)
        check_rope(model, rope_name)
        inv_freq = model.model.rotary_emb.inv_freq.float().clone()
        scaling = float(model.model.rotary_emb.attention_scaling)
        for mask_name in MASKS:
            if mask_name == "causal":
                position_ids, mask = pos_causal, None
            else:
                position_ids, mask = pos_reset, document_mask(doc_ids, torch.float64)
            model.zero_grad(set_to_none=True)
            logits = forward(model, ids, position_ids, mask)
            loss = F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1), ignore_index=-100)
            loss.backward()
            if mask_name == "document":
                check_document_mask(model, rope_name, ids, pos_reset, doc_ids, mask, logits.detach())
            tensors = {"logits": logits.detach().float().contiguous(), "loss": loss.detach().float().reshape(1),
                       "rope.inv_freq": inv_freq}
            for name, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
                tensors[f"grad.{name}"] = p.grad.detach().float().contiguous()
            meta = {"rope": json.dumps(ROPES[rope_name]), "mask": mask_name, "attention_scaling": repr(scaling),
                    "loss": "cross_entropy mean over targets != -100", "dtype": "computed in float64, stored float32",
                    **{f"{d}_version": v for d, v in versions.items()}}
            save_safetensors(tensors, os.path.join(out, f"golden_{rope_name}_{mask_name}.safetensors"), meta)
            all_logits[rope_name, mask_name] = logits.detach()
            print(f"{rope_name:<8} {mask_name:<9} {loss.item():12.8f}  {scaling:<12.6f}  "
                  + " ".join(f"{v:.4g}" for v in inv_freq.tolist()))

    # The variants must actually differ.
    for (rope_name, mask_name), logits in all_logits.items():
        if rope_name != "none":
            d = (logits - all_logits["none", mask_name]).abs().max().item()
            assert d > 1e-3, (rope_name, mask_name, "same logits as none", d)
        if mask_name == "document":
            d = (logits - all_logits[rope_name, "causal"]).abs().max().item()
            assert d > 1e-3, (rope_name, "document == causal", d)
    names = list(all_logits)
    for i, a in enumerate(names):
        for b_ in names[i + 1:]:
            assert not torch.allclose(all_logits[a], all_logits[b_], atol=1e-6), (a, b_)

    written = ["hf_tiny/config.json", "hf_tiny/model.safetensors", "batch.json"] + [
        f"golden_{r}_{m}.safetensors" for r in ROPES for m in MASKS]
    total = sum(os.path.getsize(os.path.join(out, f)) for f in written)
    print(f"wrote {len(written)} files to {out}, {total} bytes in all; "
          f"transformers {versions['transformers']}, torch {versions['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
