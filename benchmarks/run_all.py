"""Run every benchmark once, print one table and write ``bench.json`` (``make bench``).

Each figure is measured in this run next to its reference (cached vs uncached, with vs without
KV cache), so ratios never mix machines. Each benchmark module exposes ``run() -> dict``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: (key in bench.json, module, goal as text, predicate on the value)
BENCHMARKS = [
    ("walkthrough_s", "walkthrough_time", "<= 360 s", lambda v: v <= 360),
    ("notebooks_s", "notebooks_time", "<= 480 s, each <= 90 s", lambda v: v <= 480),
    ("feature_cache_ratio", "feature_cache", "<= 0.3", lambda v: v <= 0.3),
    ("kv_cache_speedup", "kv_cache", ">= 5x", lambda v: v >= 5),
    ("ig_map_s", "ig_map", "<= 2 s", lambda v: v <= 2),
    ("synth_2000_s", "synth_throughput", "<= 30 s", lambda v: v <= 30),
]


def machine() -> dict:
    """Cores, CPU model, GPU (if any) and date: the context every number needs."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "python": platform.python_version(),
            "date": dt.date.today().isoformat()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--only", nargs="*", help="keys to run (default: all)")
    args = parser.parse_args(argv)

    results: dict = {"machine": machine(), "details": {}}
    for key, module_name, goal, ok in BENCHMARKS:
        if args.only and key not in args.only:
            continue
        start = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            detail = module.run()
            value = detail[key]
            results[key] = value
            results["details"][key] = detail
            status = "met" if ok(value) else "MISSED"
        except Exception as exc:  # a failing benchmark is reported, the others still run
            results[key] = None
            results["details"][key] = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
            status = "error"
            value = None
        shown = "—" if value is None else f"{value:.3g}"
        print(f"{key:<22} {shown:>10}   goal {goal:<24} {status}  ({time.perf_counter() - start:.0f} s)",
              flush=True)

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = importlib.import_module("gpu_bench").run(shape="7b", batches=(4, 12, 24), steps=5,
                                                          decode_tokens=128)
    except Exception as exc:
        gpu = {"error": f"{type(exc).__name__}: {exc}"}
    results["gpu"] = gpu
    print(f"{'gpu':<22} {'—' if gpu is None else json.dumps(gpu)[:60]}")

    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
