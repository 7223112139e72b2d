#!/usr/bin/env python3
"""Acceptance check: the official `openai` Python client talks to `grist serve` (chat and
completions) and gets the same greedy text as `grist generate`.

Starts `grist serve MODEL --port P --model-name NAME` on a free port, waits for its stderr line
`grist serve: listening on http://127.0.0.1:P`, then with `openai.OpenAI(base_url=.../v1)`:

  - client.models.list()                      must list NAME;
  - 4 x client.completions.create(prompt=P, temperature=0, max_tokens=N)
        vs `grist generate MODEL --prompt P --max-new-tokens N --json`;
  - 4 x client.chat.completions.create(messages=[{"role": "user", "content": Q}], temperature=0,
        max_tokens=N)
        vs `grist generate` on the ChatML rendering of that conversation with SmolLM2's default
        system prompt (what its chat template adds when there is no system message);
  - 1 x completions with stop=["\\n"]: the generate text cut before its first "\\n";
  - every response has choices[0].finish_reason (== generate's) and usage.{prompt,completion,
    total}_tokens (== len(prompt_ids), len(ids), their sum);
  - n=2 should be refused with a 4xx (reported as a warning only).

Prints a table and exits 1 on any mismatch (2 when the server does not come up).
The transformers side (greedy text of the same model in transformers) is in
tests/bench/synth_speed.py, which runs in the megatron venv; this script needs only `openai`.

Run in the synth venv (tests/parity/synth_venv.sh):

    ~/.cache/grist/synth-venv/bin/python tests/parity/serve_openai_check.py \\
        [--grist PATH] [--model PATH] [--max-tokens 32] [-j THREADS]

--grist defaults to $CARGO_TARGET_DIR/release/grist (CARGO_TARGET_DIR default ~/.cache/grist-target);
--model to ~/.cache/grist/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (a grist checkpoint dir works too).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
COMPLETION_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea,",
    "List three primary colors:\n1.",
]
CHAT_QUESTIONS = [
    "Give me three tips for staying healthy.",
    "What is 12 times 7?",
    "Write a haiku about the sea.",
    "Translate 'good morning' into French.",
]
STOP_PROMPT = "Here is a short list of fruits:\n-"
SPECIAL_TAILS = ("<|im_end|>", "<|endoftext|>")


def chatml(question: str) -> str:
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
            f"<|im_start|>user\n{question}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_grist() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/grist-target")
    return Path(target) / "release/grist"


class Server:
    """`grist serve` as a child process; stderr is echoed (prefixed) and watched for the ready line."""

    def __init__(self, cmd: list[str], port: int):
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.marker = f"grist serve: listening on http://127.0.0.1:{port}"
        print("$", " ".join(cmd), file=sys.stderr)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.lines.append(line)
            print(f"  [serve] {line}", file=sys.stderr)
            if line.startswith(self.marker):
                self.ready.set()

    def wait_ready(self, timeout: float) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.ready.wait(0.2):
                return True
            if self.proc.poll() is not None:
                self.thread.join(2)
                return self.ready.is_set()
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def generate(grist: Path, model: str, prompt: str, n: int, threads: int | None) -> dict:
    cmd = [str(grist), "generate", model, "--prompt", prompt, "--max-new-tokens", str(n), "--json"]
    if threads:
        cmd += ["-j", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> exit {r.returncode}\n{r.stderr[-2000:]}")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError:
        # tolerate log lines before the JSON object
        for line in reversed(r.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise


def strip_special_tail(text: str) -> str:
    for t in SPECIAL_TAILS:
        if text.endswith(t):
            return text[: -len(t)]
    return text


def short(s: str, n: int = 38) -> str:
    s = json.dumps(s, ensure_ascii=False)[1:-1]
    return s if len(s) <= n else s[: n - 1] + "…"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grist", type=Path, default=default_grist())
    ap.add_argument("--model", default=str(Path.home() / ".cache/grist/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--model-name", default="smollm2-135m-instruct")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("-j", "--threads", type=int, default=None, help="passed to grist serve / generate as -j")
    ap.add_argument("--port", type=int, default=None, help="default: a free port")
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    args = ap.parse_args()

    if not args.grist.exists():
        print(f"no grist binary at {args.grist} (build with cargo build --release, or pass --grist)", file=sys.stderr)
        return 2
    # never send localhost traffic through a proxy
    no_proxy = ",".join(x for x in (os.environ.get("NO_PROXY"), "127.0.0.1", "localhost") if x)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = no_proxy

    port = args.port or free_port()
    cmd = [str(args.grist), "serve", args.model, "--port", str(port), "--host", "127.0.0.1",
           "--model-name", args.model_name]
    if args.threads:
        cmd += ["-j", str(args.threads)]
    server = Server(cmd, port)
    failures: list[str] = []
    warnings: list[str] = []
    rows: list[tuple] = []
    try:
        t0 = time.monotonic()
        if not server.wait_ready(args.startup_timeout):
            print(f"FAIL: grist serve not ready after {time.monotonic() - t0:.0f} s "
                  f"(exit code {server.proc.poll()}); wanted a stderr line starting {server.marker!r}",
                  file=sys.stderr)
            return 2
        print(f"server ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="grist-no-key",
                               max_retries=0, timeout=600.0)

        models = client.models.list()
        ids = [m.id for m in models.data]
        print(f"models.list(): {ids}", file=sys.stderr)
        if args.model_name not in ids:
            failures.append(f"models.list() = {ids}, no {args.model_name!r}")

        def check(kind: str, shown: str, resp, got_text: str, gen_prompt: str, stop: list[str] | None = None):
            ref = generate(args.grist, args.model, gen_prompt, args.max_tokens, args.threads)
            want_text, want_finish, n_new = ref["text"], ref["finish_reason"], len(ref["ids"])
            if stop:
                cut = min((want_text.find(s) for s in stop if s in want_text), default=-1)
                if cut >= 0:
                    want_text, want_finish, n_new = want_text[:cut], "stop", None
            choice = resp.choices[0]
            notes = []
            ok = got_text == want_text
            if not ok and strip_special_tail(got_text) == strip_special_tail(want_text):
                ok = True
                notes.append("equal once a trailing special token is dropped")
            if not ok:
                failures.append(f"{kind} {shown!r}: serve {got_text!r} != generate {want_text!r}")
            fin = getattr(choice, "finish_reason", None)
            if fin != want_finish:
                failures.append(f"{kind} {shown!r}: finish_reason serve {fin!r} != generate {want_finish!r}")
            u = getattr(resp, "usage", None)
            if u is None or any(getattr(u, k, None) is None for k in ("prompt_tokens", "completion_tokens", "total_tokens")):
                failures.append(f"{kind} {shown!r}: usage missing or incomplete: {u!r}")
                usage = "-"
            else:
                usage = f"{u.prompt_tokens}+{u.completion_tokens}"
                if u.total_tokens != u.prompt_tokens + u.completion_tokens:
                    failures.append(f"{kind} {shown!r}: usage.total_tokens {u.total_tokens} != sum")
                if u.prompt_tokens != len(ref["prompt_ids"]):
                    failures.append(f"{kind} {shown!r}: usage.prompt_tokens {u.prompt_tokens} != "
                                    f"len(generate prompt_ids) {len(ref['prompt_ids'])}")
                if n_new is not None and want_finish == "stop" and u.completion_tokens == n_new - 1:
                    notes.append("completion_tokens one less: EOS not counted")
                elif n_new is not None and u.completion_tokens != n_new:
                    failures.append(f"{kind} {shown!r}: usage.completion_tokens {u.completion_tokens} != "
                                    f"len(generate ids) {n_new}")
            rows.append((kind, short(shown, 30), short(got_text), short(want_text), f"{fin}/{want_finish}", usage,
                         ("OK" if ok else "MISMATCH") + (f" ({'; '.join(notes)})" if notes else "")))

        for p in COMPLETION_PROMPTS:
            r = client.completions.create(model=args.model_name, prompt=p, temperature=0, max_tokens=args.max_tokens)
            check("completion", p, r, r.choices[0].text, p)
        for q in CHAT_QUESTIONS:
            r = client.chat.completions.create(model=args.model_name, messages=[{"role": "user", "content": q}],
                                               temperature=0, max_tokens=args.max_tokens)
            msg = r.choices[0].message
            if msg.role != "assistant":
                failures.append(f"chat {q!r}: message.role {msg.role!r}")
            check("chat", q, r, msg.content or "", chatml(q))
        r = client.completions.create(model=args.model_name, prompt=STOP_PROMPT, temperature=0,
                                      max_tokens=args.max_tokens, stop=["\n"])
        check("stop=\\n", STOP_PROMPT, r, r.choices[0].text, STOP_PROMPT, stop=["\n"])

        try:
            client.completions.create(model=args.model_name, prompt="Hi", max_tokens=2, n=2)
            warnings.append("n=2 was accepted (expected a 4xx)")
        except openai.APIStatusError as e:
            if not 400 <= e.status_code < 500:
                warnings.append(f"n=2 gave HTTP {e.status_code} (expected a 4xx)")
            else:
                print(f"n=2 refused as expected: HTTP {e.status_code}", file=sys.stderr)
    except openai.APIError as e:
        failures.append(f"openai error: {type(e).__name__}: {e}")
    finally:
        server.stop()

    head = ("kind", "prompt", "grist serve", "grist generate", "finish serve/gen", "usage p+c", "result")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    for w in warnings:
        print(f"WARNING: {w}")
    for f in failures:
        print(f"FAIL: {f}")
    print(f"{len(rows)} requests compared, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
