"""Speed of one Integrated-Gradients map of a phrase on the tiny model (goal: ≤ 2 s on CPU).

Measures ``interpret.attribution.explain(phrase_target(...), pixels, "ig", n_steps=32)`` on one
128 px synthetic radiograph with a pleural effusion: 32 interpolated images through the Swin
encoder, the projection and the LLM (forward + backward), in one batch. The trained tiny run is
used when it is complete; otherwise a randomly initialised model of exactly the tiny sizes
(speed does not depend on the weights). Reported: the median of ``repeats`` timed runs after one
warm-up run, for 1 torch thread and for torch's default thread count; ``ig_map_s`` is the faster
of the two (on a shared machine, two threads fighting other processes can be slower than one).
``recommended_map_s``: the same for the map the CLI and the chat panel draw
(``attribution.RECOMMENDED_IG``: two baselines × 32 steps, gated by two 16-step feature IGs).

Run:  ``python benchmarks/ig_map.py``
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def tiny_model():
    """The trained tiny run if complete, else a random model with the tiny profile's sizes."""
    from xraygpt_lab.run_folder import missing_files
    from xraygpt_lab.runs import default_run_dir, load_run

    run_dir = default_run_dir()
    if run_dir.is_dir() and not missing_files(run_dir):
        return load_run(run_dir), f"trained run {run_dir}"
    import torch

    from xraygpt_lab.config import TINY_RECIPE
    from xraygpt_lab.data.synthetic.world import generate_cases
    from xraygpt_lab.models.conversation import xraygpt_prompt
    from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
    from xraygpt_lab.models.llm import tiny_llm, train_tokenizer
    from xraygpt_lab.models.xraygpt import XrayGPT

    texts = [c.summary for c in generate_cases(60, 64, seed=99)] + [xraygpt_prompt("Describe.")]
    tokenizer = train_tokenizer(texts, vocab_size=TINY_RECIPE.llm_arch.vocab_size)
    torch.manual_seed(0)
    llm = tiny_llm(tokenizer, TINY_RECIPE.llm_arch)
    return XrayGPT(VisionEncoder(EncoderConfig.tiny()), llm, tokenizer).eval(), "random weights, tiny sizes"


def _median_seconds(work, repeats: int, threads: int) -> tuple[float, object]:
    """Median wall time of ``work()`` over ``repeats`` runs with ``threads`` torch threads, after one
    warm-up run (allocations, tokenizer cache), and the last run's result; the thread count is
    restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        work()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = work()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return round(statistics.median(times), 3), result


def run(repeats: int = 3, n_steps: int = 32) -> dict:
    """Time the IG map; returns ``{"ig_map_s": median seconds, ...}``."""
    import torch

    from xraygpt_lab.data.readers.images import preprocess
    from xraygpt_lab.data.synthetic.lesions import Finding
    from xraygpt_lab.data.synthetic.world import render_case
    from xraygpt_lab.interpret.attribution import RECOMMENDED_IG, explain
    from xraygpt_lab.interpret.targets import phrase_target

    model, source = tiny_model()
    size = model.encoder.config.image_size
    case = render_case(7, size, findings=[Finding("Pleural Effusion", side="left", severity="moderate")])
    pixels = preprocess(case.image, size)[None]  # [1, 1, S, S]
    target = phrase_target(model, "left pleural effusion", case.summary)
    timed = {threads: _median_seconds(lambda: explain(target, pixels, "ig", n_steps=n_steps), repeats, threads)
             for threads in sorted({1, torch.get_num_threads()})}
    medians = {threads: seconds for threads, (seconds, _) in timed.items()}
    best = min(medians, key=medians.get)
    recommended, _ = _median_seconds(lambda: explain(target, pixels, "ig", n_steps=n_steps, **RECOMMENDED_IG),
                                     repeats, best)
    result = timed[best][1]
    return {"ig_map_s": medians[best], "threads": best, "ig_map_s_by_threads": medians,
            "recommended_map_s": recommended,
            "n_steps": n_steps, "image_size": size, "model": source, "ig_delta": result.delta}


if __name__ == "__main__":
    result = run()
    print(f"32-step IG map of a phrase on the tiny model: {result['ig_map_s']:.2f} s "
          f"(goal <= 2 s; {result['model']}; {result['threads']} threads); the recommended gated map over "
          f"two baselines: {result['recommended_map_s']:.2f} s")
    print(result)
