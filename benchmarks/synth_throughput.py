"""Benchmark: export 2,000 synthetic radiographs at 128 px (target <= 30 s on 2 cores).

Run ``python benchmarks/synth_throughput.py [--n N] [--workers W]``; prints one
line and ``run()`` returns the numbers as a dict. Timings on a shared machine are inflated by
other users' load; the line also reports single-process render time per image.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

TARGET_S = 30.0


def run(n: int = 2000, size: int = 128, workers: int | None = None, seed: int = 0) -> dict:
    """Export ``n`` images into a temporary folder and time it."""
    from xraygpt_lab.data.synthetic.export import export_dataset
    from xraygpt_lab.data.synthetic.world import generate_cases

    t0 = time.perf_counter()
    for _ in generate_cases(50, size, seed=seed + 1):
        pass
    render_ms = (time.perf_counter() - t0) / 50 * 1000
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_dataset(tmp, n=n, size=size, seed=seed, progress=False, workers=workers)
        seconds = time.perf_counter() - t0
    scaled = seconds * 2000 / n
    return {
        "benchmark": "synth_throughput", "n": n, "size": size, "workers": workers,
        "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1),
        "seconds_per_2000": round(scaled, 2), "synth_2000_s": round(scaled, 2), "render_ms_per_image_1proc": round(render_ms, 2),
        "target_s_per_2000": TARGET_S, "meets_target": scaled <= TARGET_S,
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    r = run(a.n, a.size, a.workers)
    print(f"synth: {r['n']} images at {r['size']} px in {r['seconds']} s with {r['workers']} workers "
          f"({r['images_per_s']} img/s; {r['seconds_per_2000']} s per 2000, target <= {TARGET_S} s: "
          f"{'OK' if r['meets_target'] else 'MISSED'}; render {r['render_ms_per_image_1proc']} ms/img; "
          f"load {r['load_avg_1m']})")
