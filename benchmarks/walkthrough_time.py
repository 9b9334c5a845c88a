"""Benchmark: wall time of ``xraygpt-lab walkthrough --profile tiny`` from scratch (goal <= 6 min).

Runs the command exactly as a student would, in a subprocess, into a fresh temporary run
folder (nothing is reused: data, encoder pretraining, LLM fine-tuning, stage 1, stage 2 and the
evaluation all run). ``walkthrough_s`` is the subprocess's wall time, import time included; the
per-stage times come from the run's own ``metrics.json`` (``timings_s``), and ROUGE-L / CE F1
are copied from it so a fast but broken run is visible. On a shared machine the time is
inflated by other users' load (``load_avg_1m`` is reported).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

GOAL_S = 360.0


def time_command(argv: Sequence[str], timeout: float | None = None,
                 env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``argv``; return ``(wall seconds, exit status, last 2000 characters of its output)``."""
    start = time.perf_counter()
    try:
        done = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        raise RuntimeError(f"{' '.join(argv)} did not finish within {timeout:.0f} s; last output:\n{tail}") from None
    return time.perf_counter() - start, done.returncode, done.stdout[-2000:]


def walkthrough_command(out: Path, profile: str = "tiny", seed: int = 0) -> list[str]:
    """The command line the benchmark times (the package's console entry point, via ``-m``)."""
    return [sys.executable, "-m", "xraygpt_lab", "walkthrough", "--profile", profile, "--out", str(out),
            "--seed", str(seed), "--quiet"]


def run(profile: str = "tiny", seed: int = 0, out: str | None = None, timeout: float = 3600,
        threads: int | None = None) -> dict:
    """Train a fresh run with the CLI and time it; ``out`` keeps the run (default: a temp folder).

    ``threads`` sets ``OMP_NUM_THREADS`` for the subprocess (torch's intra-op threads); None
    inherits the environment. On an oversubscribed shared machine ``threads=1`` avoids OpenMP
    threads waiting for each other at every small kernel.
    """
    env = dict(os.environ)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(out) if out is not None else Path(tmp) / "run"
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ValueError(f"{run_dir} is not empty: the benchmark times a walkthrough from scratch")
        load_before = os.getloadavg()[0]
        seconds, status, tail = time_command(walkthrough_command(run_dir, profile, seed), timeout, env)
        if status != 0:
            raise RuntimeError(f"walkthrough exited with status {status}; last output:\n{tail}")
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.is_file():
            raise RuntimeError(f"walkthrough finished but wrote no {metrics_path}; last output:\n{tail}")
        metrics = json.loads(metrics_path.read_text())
        history_path = run_dir / "history.json"
        history = json.loads(history_path.read_text()) if history_path.is_file() else {}
    blind = metrics.get("baselines", {}).get("image_blind", {})
    return {
        "benchmark": "walkthrough_time", "walkthrough_s": round(seconds, 1), "profile": profile,
        "seed": seed, "omp_num_threads": env.get("OMP_NUM_THREADS"), "stages_s": metrics.get("timings_s", {}),
        "rougeL": metrics.get("rougeL"), "ce_f1_macro": metrics.get("ce_f1_macro"),
        "image_blind_ce_f1_macro": blind.get("ce_f1_macro"),
        # what encoder_bf16 "auto" chose on this CPU (train.precision): timings depend on it
        "encoder_bf16": history.get("encoder_bf16") if isinstance(history, dict) else None,
        "goal_s": GOAL_S, "meets_goal": seconds <= GOAL_S, "cpu_count": os.cpu_count(),
        "load_avg_1m_before": round(load_before, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the trained run here (must be empty or missing)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run (default: inherit)")
    a = ap.parse_args()
    r = run(seed=a.seed, out=a.out, threads=a.threads)
    print(f"walkthrough: {r['walkthrough_s']} s (goal <= {GOAL_S:.0f} s: {'OK' if r['meets_goal'] else 'MISSED'}); "
          f"stages {r['stages_s']}; ROUGE-L {r['rougeL']}, CE macro-F1 {r['ce_f1_macro']} "
          f"(image-blind {r['image_blind_ce_f1_macro']}); encoder bf16 {r['encoder_bf16']}; load {r['load_avg_1m_before']} -> {r['load_avg_1m_after']}")
