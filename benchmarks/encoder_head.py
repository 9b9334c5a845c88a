"""What the encoder's tokens carry, per observation, and how faint the findings it misses are.

For ``n`` held-out synthetic films (seed 7331, never trained on) the run's frozen encoder reads
each film and its token label head (kept in the run folder, ``train.label_supervision``) scores
every observation: the image-level logit (log-sum-exp over tokens). Reported per observation:
positives, ROC AUC of that score, F1 at the head's own threshold (logit 0) and the best F1 over
thresholds — the ceiling of what the LLM can read off these tokens through one linear layer.

For the small findings (lung lesions, rib fractures) the positives are also split into thirds
by conspicuity (``data.synthetic.world.conspicuity``: the largest change the finding makes to
the noise-free film inside its mask) with the head's recall in each third: whether the misses
are the faint ones.

Run:  ``python benchmarks/encoder_head.py [--run reference] [--n 300] [--seed 7331]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_OUT_SEED = 7331
SMALL = ("Lung Lesion", "Fracture")


def best_f1(scores, truth) -> float:
    """Largest F1 over all thresholds of ``scores`` (numpy ``[n]``) against 0/1 ``truth``."""
    import numpy as np

    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(truth[order])
    if hits[-1] == 0:
        return float("nan")
    precision, recall = hits / np.arange(1, len(scores) + 1), hits / hits[-1]
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))


def run(run_dir: str | None = None, n: int = 300, seed: int = HELD_OUT_SEED, log=print) -> dict:
    """Score the head of ``run_dir`` on ``n`` films of ``seed``; returns the tables."""
    import numpy as np
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.world import conspicuity, render_cases
    from xraygpt_lab.models.encoder import VisionEncoder
    from xraygpt_lab.models.zero_shot import roc_auc
    from xraygpt_lab.run_folder import load_weights
    from xraygpt_lab.runs import ensure_tiny_run, resolve_run
    from xraygpt_lab.train.label_supervision import TokenLabelHead
    from xraygpt_lab.train.walkthrough import LABEL_HEAD_FILE, laterality_columns

    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = resolve_run(run_dir) if run_dir else ensure_tiny_run()
    head_path = path / "encoder" / LABEL_HEAD_FILE
    if not head_path.is_file():
        raise SystemExit(f"{path} keeps no token label head ({LABEL_HEAD_FILE} in its encoder folder): a "
                         "walkthrough's run folder has one; the packaged reference leaves it out (use the "
                         "folder it was built from, e.g. runs/reference)")
    encoder = VisionEncoder.from_pretrained(path / "encoder").eval()
    columns = laterality_columns()
    head = TokenLabelHead(encoder.token_dim, len(columns))
    head.load_state_dict(load_weights(head_path)[0])
    size = encoder.config.image_size
    cases = render_cases(n, size, seed)
    pixels = torch.stack([preprocess(c.image, size) for c in cases])  # [n, 1, S, S]
    with torch.no_grad():
        logits = torch.cat([head(encoder(pixels[i:i + 50]).tokens) for i in range(0, n, 50)])  # [n, L]
    observations = sorted({o for o, _ in columns}, key=[o for o, _ in columns].index)
    table: dict[str, dict] = {}
    for obs in observations:
        index = [j for j, (o, _) in enumerate(columns) if o == obs]
        score = logits[:, index].max(dim=1).values  # [n] either side
        truth = torch.tensor([c.labels[obs] for c in cases])
        said = score > 0
        tp = int((said & truth.bool()).sum())
        row = {"positives": int(truth.sum()), "auc": round(roc_auc(score, truth), 3),
               "f1_at_0": round(2 * tp / max(1, int(said.sum()) + int(truth.sum())), 3),
               "best_f1": round(best_f1(score.numpy(), truth.numpy()), 3)}
        if obs in SMALL:
            found = [(conspicuity(c, obs), bool(said[i])) for i, c in enumerate(cases) if c.labels[obs]]
            found.sort(key=lambda x: x[0].peak)
            thirds = [found[k * len(found) // 3:(k + 1) * len(found) // 3] for k in range(3)]
            row["by_conspicuity"] = [
                {"peak": [round(t[0][0].peak, 3), round(t[-1][0].peak, 3)],
                 "median_changed_pixels": int(np.median([c.changed_pixels for c, _ in t])),
                 "recall": round(sum(hit for _, hit in t) / len(t), 2)} for t in thirds if t]
        table[obs] = row
    return {"run": str(path), "held_out_seed": seed, "n": n, "observations": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="run folder or 'reference' (default: the tiny run)")
    parser.add_argument("--n", type=int, default=300, help="held-out films (default 300)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help=f"held-out seed (default {HELD_OUT_SEED})")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args.run, args.n, args.seed)
    print(f"{'observation':<18} {'pos':>4} {'AUC':>6} {'F1@0':>6} {'best F1':>8}")
    for obs, r in result["observations"].items():
        print(f"{obs:<18} {r['positives']:>4} {r['auc']:>6} {r['f1_at_0']:>6} {r['best_f1']:>8}")
        for k, third in enumerate(r.get("by_conspicuity", [])):
            low, high = third["peak"]
            print(f"  conspicuity third {k + 1}: peak change {low:.3f}-{high:.3f}, "
                  f"median {third['median_changed_pixels']} pixels changed, recall {third['recall']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
