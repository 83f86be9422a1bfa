"""The GPU check, for a machine with NVIDIA GPUs (bench/gpu_check.sh runs it under a
5-minute limit). In a throwaway project it checks, printing PASS/FAIL and numbers:

  1. inventory: nvidia-smi lists the GPUs, as `workbench gpus` reads them;
  2. a CUDA torch env: env "cuda" (torch and transformers from the package index: the
     Linux wheels are CUDA builds) with `gpus = 1`, built, its kernel registered;
  3. two kernels, started as JupyterLab and papermill start them (jupyter_client, the
     kernel provisioner), each on its own GPU: distinct CUDA_VISIBLE_DEVICES, torch sees
     one device and allocates memory there (with one GPU: the second start is refused,
     naming the first kernel);
  4. `workbench gpus` names both holders, and nvidia-smi sees their memory;
  5. generation on CUDA: a GPT-2-shaped model generates on the kernel's GPU (tokens/s);
  6. the leases are gone once the kernels are.

GPU_CHECK_DEVICE=cpu runs the same steps where CUDA cannot (the test suite does that with
a FAKE nvidia-smi on a machine without a GPU: it checks the orchestration, not CUDA).
GPU_CHECK_SPEC names another environment.yml for the env (default: the one below).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = """dependencies:
  - python=3.11
  - pip
  - pip:
      - torch
      - transformers>=4.40
"""
PROBE = """
import json, os, time, torch
device = "{device}"
ok = device == "cpu" or torch.cuda.is_available()
info = {{"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "cuda": torch.cuda.is_available(),
        "count": torch.cuda.device_count() if device == "cuda" else 0,
        "name": torch.cuda.get_device_name(0) if device == "cuda" and ok else "cpu"}}
held = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=device) if ok else None
print("PROBE", json.dumps(info))
"""
GENERATE = """
import json, time, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=4000))
model = model.to("{device}").eval()
prompt = torch.randint(0, 4000, (1, 16), device="{device}")
with torch.no_grad():
    model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    began = time.perf_counter()
    out = model.generate(prompt, max_new_tokens=128, min_new_tokens=128, do_sample=False,
                         pad_token_id=0)
    if "{device}" == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
print("GENERATED", json.dumps({{"tokens": out.shape[1] - 16, "seconds": seconds,
                               "device": str(next(model.parameters()).device)}}))
"""

failures: list[str] = []


def report(ok: bool, what: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
    if not ok:
        failures.append(what)


def workbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args], cwd=cwd, capture_output=True, text=True
    )


def execute(kc, code: str, tag: str) -> dict | None:
    seen: list[str] = []

    def collect(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            seen.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            seen.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}\n")

    kc.execute_interactive(code, timeout=240, output_hook=collect)
    text = "".join(seen)
    for line in text.splitlines():
        if line.startswith(tag):
            return json.loads(line[len(tag) :])
    print(f"      kernel said: {text.strip()[-300:]}")
    return None


def main() -> int:
    from jupyter_client.manager import start_new_kernel

    device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="wb-gpu-check-") as tmp:
        root = Path(tmp)
        (root / "envs").mkdir()
        spec = (
            Path(os.environ["GPU_CHECK_SPEC"]).read_text()
            if "GPU_CHECK_SPEC" in os.environ
            else SPEC
        )
        (root / "envs" / "cuda.yml").write_text(spec)
        (root / "workbench.toml").write_text(
            '[project]\nname = "gpu-check"\n[envs.cuda]\ngpus = 1\n'
        )

        listed = json.loads(workbench("gpus", "--json", cwd=root).stdout)["data"]
        gpus = listed["gpus"]
        report(
            bool(gpus),
            f"inventory: {len(gpus)} GPU(s): "
            + ", ".join(
                f"{g['index']} {g['name']} {g['memory_free']}/{g['memory_total']} MiB free"
                for g in gpus
            )
            if gpus
            else f"inventory: {listed['note']}",
        )
        if not gpus:
            return 1

        started = time.monotonic()
        build = workbench("env", "create", "cuda", "--json", cwd=root)
        try:
            result = json.loads(build.stdout)["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            result = None
        seconds = time.monotonic() - started
        if result is None:
            report(False, f"env build failed: {build.stderr.strip()[-400:]}")
            return 1
        report(True, f"CUDA torch env built in {seconds:.0f} s ({result['status']})")
        check = result.get("gpu") or {}
        if device == "cuda":
            report(bool(check.get("ok")), f"build's GPU check: {check.get('message')}")
        else:
            print(f"      build's GPU check (no CUDA here): {check.get('message')}")
        os.environ["JUPYTER_PATH"] = str(root / ".workbench" / "jupyter")

        kernels = []
        try:
            first = start_new_kernel(kernel_name="wb-cuda", startup_timeout=180)
            kernels.append(first)
            one = execute(first[1], PROBE.format(device=device), "PROBE ")
            report(
                bool(one) and (device == "cpu" or (one["cuda"] and one["count"] == 1)),
                f"kernel 1: CUDA_VISIBLE_DEVICES={one and one['visible']}, torch sees "
                f"{one and one['count']} device(s): {one and one['name']}",
            )
            second_info = None
            try:
                second = start_new_kernel(kernel_name="wb-cuda", startup_timeout=180)
                kernels.append(second)
                second_info = execute(second[1], PROBE.format(device=device), "PROBE ")
            except Exception as exc:  # one GPU: the provisioner refuses, naming the holder
                refused = str(exc)
                report(
                    len(gpus) == 1 and "held by kernel wb-cuda" in refused,
                    f"kernel 2 refused (one GPU here): {refused[:200]}",
                )
            if second_info is not None:
                report(
                    bool(one) and second_info["visible"] != one["visible"],
                    f"kernel 2: CUDA_VISIBLE_DEVICES={second_info['visible']} (kernel 1 has "
                    f"{one and one['visible']}): {second_info['name']}",
                )

            shown = workbench("gpus", "--json", cwd=root)
            data = json.loads(shown.stdout)["data"]
            holders = [h for g in data["gpus"] for h in g["holders"]]
            pids = {km.provisioner.pid for km, _ in kernels}
            report(
                {h["pid"] for h in holders if h["name"] == "wb-cuda"} == pids,
                "workbench gpus names the holders: "
                + "; ".join(
                    f"GPU {g['index']}: "
                    + ", ".join(
                        f"{h['kind']} {h['name']} (pid {h['pid']}, {h['user']})"
                        for h in g["holders"]
                    )
                    for g in data["gpus"]
                    if g["holders"]
                ),
            )
            print(workbench("gpus", cwd=root).stdout, flush=True)
            if device == "cuda":
                used = {g["index"]: g["memory_used"] for g in data["gpus"]}
                report(True, f"nvidia-smi memory used per GPU while held: {used} MiB")

            generated = execute(first[1], GENERATE.format(device=device), "GENERATED ")
            if generated:
                rate = generated["tokens"] / generated["seconds"]
                report(
                    generated["device"].startswith(device),
                    f"generation on {generated['device']}: {generated['tokens']} tokens at "
                    f"{rate:.0f} tok/s",
                )
            else:
                report(False, "generation failed")
        finally:
            for km, kc in kernels:
                kc.stop_channels()
                km.shutdown_kernel(now=True)
        left = json.loads(workbench("gpus", "--json", cwd=root).stdout)["data"]["leases"]
        ours = [lease for lease in left if lease["project"] == str(root)]
        report(not ours, f"leases freed at shutdown ({len(ours)} left)")
    print(
        f"{'PASS' if not failures else 'FAIL'}: GPU check in {time.monotonic() - began:.0f} s"
        f" ({len(failures)} failure(s))"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
