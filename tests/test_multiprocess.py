"""Data-parallel training: two CPU processes under ``accelerate launch`` (gloo), against one process.

``tests/multiprocess_align.py`` trains a tiny XrayGPT's projection for 8 steps at 3 examples per
process. Runs compared:

* two processes (DDP): each rank draws its own batch (``step_rng(seed, step, rank)``);
* one process on the GLOBAL batch: rank 0's and rank 1's batches of each step, concatenated;
* one process on rank 0's batches alone: what rank 0 would compute if gradients were never
  all-reduced between the processes;
* two processes stopped after 3 steps, then resumed by a second two-process launch.

Why the two-process run and the global-batch run agree only within a tolerance, not bitwise:
DDP averages the ranks' gradients, i.e. it differentiates the mean of the per-rank mean losses,
while one process differentiates the token-weighted mean over the global batch. The two are the
same objective only when every rank has as many target tokens; ``multiprocess_align`` cuts every
target at 8 tokens so that they are (with whole summaries of unequal length they differ by design,
by ~1e-3 in the loss here). What is left is floating-point summation order: gloo sums the two
ranks' gradients and then divides, the single process reduces over 6 rows at once and pads the
batch to another length. Measured: projection weights within 2e-8, losses equal to the 5 decimals
the history keeps (a last-digit flip at most); rank 0 alone ends ~2e-2 away.

Launching on a CPU: ``accelerate launch --cpu --num_processes 2`` starts ONE process (``--cpu``
only spreads over processes through an MPI hostfile), so the test passes ``--multi_gpu``, which
starts the workers through torchrun, and ``XRAYGPT_DEVICE=cpu`` (``train.loop.make_accelerator``
then asks for ``Accelerator(cpu=True)``): accelerate runs them as ``MULTI_CPU`` on gloo, on a
machine with or without a GPU. ``OMP_NUM_THREADS=1`` keeps two processes from fighting over the
cores, and ``HF_HOME`` points at an empty folder so that a developer's ``accelerate config`` file
is not read.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("multiprocess_align.py")
STEPS, STOP_AFTER = 8, 3
WEIGHT_ATOL = 1e-6  # 2 processes vs the global batch (measured: < 2e-8)
LOSS_ATOL = 2e-5  # the history keeps 5 decimals: one last-digit flip, plus rounding


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports (the sockets are held open together, then closed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        if proc.returncode:
            pytest.fail(f"{' '.join(proc.args)} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-5000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """All runs, once: name -> the JSON summary written by the main process (+ the folders used)."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is needed")
    tmp = tmp_path_factory.mktemp("multiprocess")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XRAYGPT_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "HF_HOME": str(tmp / "hf-home"), "TOKENIZERS_PARALLELISM": "false"}
    common = ["--steps", str(STEPS), "--batch-size", "3", "--seed", "0", "--save-every", "2"]
    ports = iter(free_ports(3))

    def start(cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def single(name: str, *extra: str) -> subprocess.Popen:
        return start([sys.executable, str(SCRIPT), "--out", str(tmp / f"{name}.json"), *common, *extra])

    def two(name: str, ckpt: str, *extra: str) -> subprocess.Popen:
        return start([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                      "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                      "--main_process_port", str(next(ports)), str(SCRIPT), "--out", str(tmp / f"{name}.json"),
                      "--checkpoint", str(tmp / ckpt / "stage.safetensors"), *common, *extra])

    # independent runs side by side (most of their time is imports), then the resume
    _wait([two("ddp", "ckpt-ddp"), two("stopped", "ckpt-resume", "--stop-after", str(STOP_AFTER)),
           single("global", "--global-batch"), single("rank0")])
    _wait([two("resumed", "ckpt-resume")])
    summaries = {name: json.loads((tmp / f"{name}.json").read_text())
                 for name in ("global", "rank0", "ddp", "stopped", "resumed")}
    summaries["folders"] = {"ddp": tmp / "ckpt-ddp", "resume": tmp / "ckpt-resume"}
    return summaries


def weights(summary: dict) -> torch.Tensor:
    p = summary["projection"]
    return torch.cat([torch.tensor(p["weight"]).flatten(), torch.tensor(p["bias"])])


def test_the_launch_runs_two_processes(runs):
    ddp = runs["ddp"]
    assert ddp["num_processes"] == 2 and ddp["distributed_type"].endswith("MULTI_CPU")
    assert [r["rank"] for r in ddp["ranks"]] == [0, 1]
    assert ddp["ranks"][0]["tokenizer"] == ddp["ranks"][1]["tokenizer"]  # the same model on each rank
    assert ddp["finished"] and ddp["steps_done"] == STEPS


def test_each_rank_draws_its_own_batches(runs):
    rank0, rank1 = (r["draws"] for r in runs["ddp"]["ranks"])
    assert list(rank0) == list(rank1) == [str(s) for s in range(1, STEPS + 1)]
    for step in rank0:
        assert len(rank0[step]) == len(rank1[step]) == 3
        assert rank0[step] != rank1[step], f"step {step}: both ranks drew {rank0[step]}"
    # the global-batch run saw exactly rank 0's then rank 1's examples; rank 0 alone, rank 0's
    assert runs["global"]["ranks"][0]["draws"] == {s: rank0[s] + rank1[s] for s in rank0}
    assert runs["rank0"]["ranks"][0]["draws"] == rank0


def test_two_processes_equal_one_process_on_the_global_batch(runs):
    ddp, glob = runs["ddp"], runs["global"]
    assert [h["step"] for h in ddp["history"]] == [h["step"] for h in glob["history"]]
    for a, b in zip(ddp["history"], glob["history"]):
        assert a["loss"] == pytest.approx(b["loss"], abs=LOSS_ATOL), a["step"]
        assert a["lr"] == pytest.approx(b["lr"])
    torch.testing.assert_close(weights(ddp), weights(glob), atol=WEIGHT_ATOL, rtol=0)


def test_gradients_are_synchronised(runs):
    """Without the all-reduce, rank 0 would end at the rank-0-alone weights and rank 1 elsewhere."""
    ddp, glob, rank0 = (weights(runs[k]) for k in ("ddp", "global", "rank0"))
    assert (glob - rank0).abs().max() > 1e-3  # rank 0's batches alone lead elsewhere
    assert (ddp - glob).abs().max() < 1e-3 * (ddp - rank0).abs().max()
    checksums = {r["projection_sha256"] for r in runs["ddp"]["ranks"]}
    assert checksums == {runs["ddp"]["projection"]["sha256"]}, "the ranks ended with different weights"


def test_one_checkpoint_file_written_by_the_main_process(runs):
    for folder in runs["folders"].values():
        assert sorted(p.name for p in folder.iterdir()) == ["stage.safetensors"]


def test_interrupted_run_resumes_to_the_uninterrupted_weights(runs):
    stopped, resumed, ddp = runs["stopped"], runs["resumed"], runs["ddp"]
    assert stopped["steps_done"] == STOP_AFTER and not stopped["finished"]
    assert stopped["history"] == ddp["history"][:STOP_AFTER]
    assert resumed["steps_done"] == STEPS and resumed["finished"]
    # the second launch replays steps 4..8 only, with the batches the first would have drawn
    for got, want in zip(resumed["ranks"], ddp["ranks"]):
        assert got["draws"] == {s: d for s, d in want["draws"].items() if int(s) > STOP_AFTER}
    assert resumed["history"] == ddp["history"]  # exact: same processes, same reductions
    assert resumed["projection"]["sha256"] == ddp["projection"]["sha256"]
    assert {r["projection_sha256"] for r in resumed["ranks"]} == {ddp["projection"]["sha256"]}
