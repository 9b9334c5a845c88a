"""Benchmark: does the chat answer yes/no questions from the image?

For ``n`` held-out synthetic studies (seed 3000 unless ``--seed``, never trained on) the run is asked, as the first
turn of a fresh chat, the yes/no question of every drawn observation (``data.instructions.
finding_question``, e.g. "Is there a pleural effusion?") and answers greedily. An answer counts as
"yes" when it starts with "Yes", "no" when it starts with "No"; anything else is read by the
CheXpert-style labeler (a positive mention = yes). Reported per observation and overall:
sensitivity (yes on positives), specificity (no on negatives) and balanced accuracy, beside the
same model with the image withheld (the image must matter), and the share of answers that
contradict themselves: a "Yes." whose next words deny the finding ("Yes. The heart is normal in
size.") or a "No." whose next words assert it, read by the labeler.

Run:  ``python benchmarks/chat_yes_no.py [--n 30] [--run RUN] [--seed S]``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HELD_OUT_SEED = 3000


def answer_is_yes(answer: str, observation: str) -> bool:
    """Read a yes/no answer: a leading Yes/No decides, otherwise the labeler's mention."""
    from xraygpt_lab.data.text.labeler import label_report

    head = answer.strip().lower()
    if head.startswith("yes"):
        return True
    if head.startswith("no"):
        return False
    return label_report(answer).get(observation, 0) == 1


def self_contradicts(answer: str, observation: str) -> bool:
    """A leading "Yes"/"No" that the rest of the answer contradicts for ``observation``: the
    labeler reads the words after the first sentence break (``.`` or ``,``) as denying (0) or
    asserting (1) the finding."""
    from xraygpt_lab.data.text.labeler import label_report
    from xraygpt_lab.train.grounding import polarity

    head = answer.strip()
    said = polarity(head)
    cut = min((i for i in (head.find("."), head.find(",")) if i >= 0), default=-1)
    rest = head[cut + 1:].strip() if said and cut >= 0 else ""
    if not rest:
        return False
    value = label_report(rest).get(observation)
    return (said == "yes" and value == 0) or (said == "no" and value == 1)


def rates(rows: list[dict]) -> dict[str, float | int]:
    """Sensitivity, specificity and balanced accuracy of ``rows`` (``truth``, ``yes``), and the
    share of self-contradicting answers when rows carry ``contradicts``."""
    pos = [r for r in rows if r["truth"]]
    neg = [r for r in rows if not r["truth"]]
    sens = round(sum(r["yes"] for r in pos) / len(pos), 3) if pos else None
    spec = round(sum(not r["yes"] for r in neg) / len(neg), 3) if neg else None
    balanced = round((sens + spec) / 2, 3) if pos and neg else None
    result = {"n_pos": len(pos), "n_neg": len(neg), "sensitivity": sens, "specificity": spec,
              "balanced_accuracy": balanced}
    if rows and all("contradicts" in r for r in rows):
        result["self_contradicting"] = round(sum(r["contradicts"] for r in rows) / len(rows), 3)
    return result


def run(n: int = 30, run_dir: str | None = None, log=print, seed: int = HELD_OUT_SEED) -> dict:
    """Ask every yes/no question of ``n`` held-out studies of ``seed``; returns the tables as a dict."""
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.text.instructions import finding_question
    from xraygpt_lab.data.synthetic.lesions import DRAWABLE
    from xraygpt_lab.data.synthetic.world import render_cases
    from xraygpt_lab.runs import ensure_tiny_run, load_run, resolve_run

    torch.set_num_threads(min(2, torch.get_num_threads()))
    path = resolve_run(run_dir) if run_dir else ensure_tiny_run()
    model = load_run(path)
    size = model.encoder.config.image_size
    cases = render_cases(n, size, seed)
    pixels = torch.stack([preprocess(c.image, size) for c in cases])  # [n, 1, S, S]
    with torch.no_grad():
        features = model.encoder.encode_tokens(pixels)  # [n, N, d]
    result: dict = {"run": str(path), "n_images": n, "held_out_seed": seed, "questions": {}}
    for withhold in (False, True):
        rows: list[dict] = []
        for observation in DRAWABLE:
            question = finding_question(observation)
            answers = model.generate([question] * n, features=features, max_new_tokens=24,
                                     withhold_image=withhold)
            for case, answer in zip(cases, answers):
                rows.append({"observation": observation, "truth": bool(case.labels[observation]),
                             "yes": answer_is_yes(answer, observation),
                             "contradicts": self_contradicts(answer, observation), "answer": answer})
        key = "image_blind" if withhold else "model"
        result[key] = {"all": rates(rows), **{o: rates([r for r in rows if r["observation"] == o]) for o in DRAWABLE}}
        if not withhold:
            result["examples"] = [{k: r[k] for k in ("observation", "truth", "answer")} for r in rows[:: max(1, n)]][:9]
        log(f"{key}: {result[key]['all']}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="held-out images (default 30)")
    parser.add_argument("--run", default=None, help="run folder (default: the tiny run, trained if absent)")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED,
                        help=f"held-out seed of the studies (default {HELD_OUT_SEED}; another one is a confirmation set)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args.n, args.run, seed=args.seed)
    print(f"{'observation':<18} {'model sens/spec':>16} {'self-contradicting':>19} {'image-blind sens/spec':>22}")
    for key in result["model"]:
        m, b = result["model"][key], result["image_blind"][key]
        print(f"{key:<18} {m['sensitivity']!s:>7} / {m['specificity']!s:<6} {m['self_contradicting']!s:>19} "
              f"{b['sensitivity']!s:>11} / {b['specificity']!s:<6}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
