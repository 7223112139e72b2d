#!/usr/bin/env python3
"""Reads the logs tests/gpu/check.sh left in a folder and prints the short table it ends with:
kernel parity and the cpu/cuda training agreement (`grist gpu check --json`), grist against
PyTorch on the 124 M model, long context, and SmolLM2 continual pretraining."""

import json
import sys
from pathlib import Path


def last_json(path: Path):
    """The last line of a file that parses as a JSON object, or None."""
    if not path.exists():
        return None
    for line in reversed(path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def size(b):
    if b is None:
        return "—"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def main(out: Path) -> int:
    steps = {}
    for line in (out / "steps.txt").read_text().splitlines():
        name, rc = line.split()[0], line.split()[1].split("=")[1]
        steps[name] = rc
    device = (out / "device.txt").read_text().strip() if (out / "device.txt").exists() else "?"
    print(f"# grist GPU check — {device}\n")
    ok = True

    rows = []
    check = out / "check.out"
    if check.exists():
        for line in check.read_text().splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
    kernels = [r for r in rows if not r["check"].startswith(("compile", "nvrtc", "driver", "device"))]
    failed = [r for r in kernels if not r["pass"]]
    compiled = [r for r in rows if r["check"].startswith("compile")]
    print("| check | result |\n|---|---|")
    print(f"| kernels compiled | {sum(r['pass'] for r in compiled)} of {len(compiled)} |")
    print(f"| kernel parity and training agreement | {len(kernels) - len(failed)} of {len(kernels)} pass (rc {steps.get('check', '?')}) |")
    for r in failed:
        print(f"| FAILED {r['check']} | {r['detail']} |")
    for r in kernels:
        if "training steps" in r["check"]:
            print(f"| {r['check']} | {'ok' if r['pass'] else 'FAILED'}: {r['detail']} |")
    ok &= bool(kernels) and not failed

    g, t = last_json(out / "grist_speed.out"), last_json(out / "torch_speed.out")
    shape = f"{g['params'] / 1e6:.0f} M model, batch {g['batch']} × {g['seq']:,}" if g else "model"
    print(f"\n| {shape} | tokens/s | MFU | device memory |\n|---|---|---|---|")
    for name, r, mem in [("grist", g, "device_memory_bytes"), ("PyTorch", t, "peak_memory_bytes")]:
        if r is None:
            print(f"| {name} | no result (rc {steps.get(name.lower().replace('pytorch', 'torch') + '_speed', '?')}) | | |")
            continue
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {fmt(r.get('mfu'), '.1%')} | {size(r.get(mem))} |")
    if g and t:
        print(f"| grist ÷ PyTorch | {g['tokens_per_s'] / t['tokens_per_s']:.2f}× | | |")

    print("\n| long context (batch 1, documents) | tokens/s | MFU | device memory |\n|---|---|---|---|")
    for p in sorted(out.glob("long_*.out"), key=lambda p: int(p.stem.split("_")[1])):
        r = last_json(p)
        if r is None:
            print(f"| {p.stem} | no result (rc {steps.get(p.stem, '?')}) | | |")
            continue
        print(f"| {r['seq']:,} | {r['tokens_per_s']:,.0f} | {fmt(r.get('mfu'), '.1%')} | {size(r.get('device_memory_bytes'))} |")

    s = last_json(out / "smollm2.out")
    print("\n| SmolLM2-135M continual | result |\n|---|---|")
    if s is None:
        print(f"| run | no result ({steps.get('smollm2', '?')}) |")
    else:
        falls = s["last_loss"] < s["first_loss"]
        print(f"| loss | {s['first_loss']:.3f} → {s['last_loss']:.3f} over {len(s['losses'])} steps ({'falls' if falls else 'DOES NOT FALL'}) |")
        print(f"| tokens/s | {s['tokens_per_s']:,.0f} |")
        ok &= falls
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
