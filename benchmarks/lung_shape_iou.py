"""Benchmark: do the world's lung fields look like real ones? Nearest-neighbour IoU against the
real lung segmentations of the torchxrayvision wheel (goal: synthetic >= real vs real).

``python benchmarks/lung_shape_iou.py [--download]`` prints one line; ``run()`` returns the
numbers. Masks are cropped to the box around both lungs and resized to 48 px, so only shape
counts; lung fields include the lung behind the heart, as these annotations draw them. Real vs
real leaves each mask out of its own comparison (the goal line). In-sample, the real-shape
synthetic lungs come from fits to all real masks; held out, shapes are fitted to one half of the
masks and compared with the other half only, next to real half vs other half. Needs the wheel's
table in the cache (``--download`` fetches it with pip); without it the run reports that it was
skipped.
"""
from __future__ import annotations

import argparse


def run(n: int = 300, download: bool = False) -> dict:
    """Nearest-neighbour IoU of ``n`` built-in and ``n`` real-shape synthetic lung fields, and
    of the real masks among themselves."""
    import numpy as np

    from xraygpt_lab.data.synthetic import real_shapes
    from xraygpt_lab.data.synthetic.anatomy import sample_anatomy

    path = real_shapes.obtain_lung_masks(allow_download=download)
    if path is None:
        return {"benchmark": "lung_shape_iou", "skipped": f"no {real_shapes.masks_path()}"}
    real = real_shapes.read_real_masks(path)
    builtin, fitted = [], []
    for i in range(n):
        p = sample_anatomy(np.random.default_rng([i, 0]))
        builtin.append(real_shapes.synthetic_mask(p))
        real_shapes.apply_real_shape(p, np.random.default_rng([i, 6]))
        fitted.append(real_shapes.synthetic_mask(p))
    rr = real_shapes.nearest_iou(real, real, same=True)
    half_a, half_b = real[0::2], real[1::2]
    fits_a = real_shapes.fit_shapes(half_a)
    held = []
    for i in range(n):
        p = sample_anatomy(np.random.default_rng([i, 0]))
        real_shapes.shape_onto(p, fits_a[int(np.random.default_rng([i, 6]).integers(len(fits_a)))])
        held.append(real_shapes.synthetic_mask(p))
    hs = real_shapes.nearest_iou(np.array(held), half_b)
    hr = real_shapes.nearest_iou(half_a, half_b)
    sb = real_shapes.nearest_iou(np.array(builtin), real)
    sf = real_shapes.nearest_iou(np.array(fitted), real)
    return {"benchmark": "lung_shape_iou", "real_masks": int(len(real)), "synthetic": n,
            "real_vs_real": round(float(rr.mean()), 3), "builtin_vs_real": round(float(sb.mean()), 3),
            "real_shapes_vs_real": round(float(sf.mean()), 3),
            "held_out_real_vs_real": round(float(hr.mean()), 3),
            "held_out_real_shapes_vs_real": round(float(hs.mean()), 3),
            "meets_goal": bool(sf.mean() >= rr.mean())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--download", action="store_true", help="fetch the torchxrayvision wheel's table with pip")
    a = ap.parse_args()
    r = run(a.n, a.download)
    if "skipped" in r:
        print(f"lung shapes: skipped ({r['skipped']})")
    else:
        print(f"lung shapes: nearest-neighbour IoU with {r['real_masks']} real masks: real vs real {r['real_vs_real']}, "
              f"built-in synthetic {r['builtin_vs_real']}, real-shape synthetic {r['real_shapes_vs_real']} "
              f"(goal: synthetic >= real vs real: {'OK' if r['meets_goal'] else 'MISSED'}); held out (fit on "
              f"one half, compared with the other): real half vs other half {r['held_out_real_vs_real']}, "
              f"real-shape synthetic {r['held_out_real_shapes_vs_real']}")
