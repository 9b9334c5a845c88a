"""Draw the README's pictures from the toolkit's own code: ``docs/images/architecture.png`` (the
paper's sizes, MedCLIP + Vicuna-7B) and ``docs/images/splice.png`` (the sequence the shipped
reference run's ``prompt_wrap`` builds for one training example, with its loss mask).

Run:  ``python scripts/make_figures.py`` (a few seconds; ``make figures``).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INSTRUCTION = "Describe the given chest x-ray image in detail."
SEED = 106  # a synthetic PA film with a left effusion


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xraygpt_lab.atomic import atomic_write
    from xraygpt_lab.data.synthetic.world import render_case
    from xraygpt_lab.models.diagram import ArchitectureSizes, architecture_figure, splice_figure
    from xraygpt_lab.runs import load_run

    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    case = render_case(SEED, 128)
    answer = case.summary.split(". ")[0] + "."
    figures = {"architecture.png": architecture_figure(ArchitectureSizes.full(), case.image, answer, INSTRUCTION),
               "splice.png": splice_figure(load_run("reference"), INSTRUCTION, answer)}
    for name, fig in figures.items():
        atomic_write(out / name, lambda tmp, fig=fig: fig.savefig(tmp, dpi=100, bbox_inches="tight", format="png"))
        plt.close(fig)
        print(f"wrote docs/images/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
