"""Full-scale XrayGPT alignment (stage 1 or 2): MedCLIP → ONE nn.Linear → Vicuna-7B, on GPUs.

XrayGPT (arXiv 2306.07971, Sec. 3.2 and 4.1) trains only the linear projection: stage 1 on the
MIMIC-CXR summaries, stage 2 on the OpenI summaries, with MiniGPT-4's warm-up + cosine schedule
(``train.schedule.XRAYGPT_STAGE1/2``). This script wires the library's pieces together:

    load_medclip_vision → FeatureCache (the frozen encoder runs once per image)
    load_llm (bf16) → XrayGPT → AlignmentSet → align_stage (accelerate; resumable checkpoint)
    → projection.safetensors (atomic write)

One GPU:        python tutorials/full_scale_train.py --medclip $XRAYGPT_MEDCLIP_DIR \\
                    --llm $XRAYGPT_LLM_DIR --data $XRAYGPT_DATA_DIR --out runs/full-stage1
Several GPUs:   accelerate launch --num_processes 4 tutorials/full_scale_train.py … (same flags)
Stage 2:        … --stage 2 --data <OpenI folder> --init-projection runs/full-stage1/projection.safetensors

``--batch-size`` is per process (XrayGPT: 3 per GPU on 4 GPUs in stage 1, 1 in stage 2).
Re-running the same command after an interruption resumes from ``<out>/stage<k>.ckpt``.
See ``tutorials/full_scale.md`` for memory and time per stage.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--medclip", required=True, help="folder with MedCLIP's pytorch_model.bin")
    parser.add_argument("--llm", required=True, help="LLaMA/Vicuna folder (config.json, *.safetensors, tokenizer)")
    parser.add_argument("--data", required=True, help="dataset folder (MIMIC-CXR-JPG, OpenI, XrayGPT layout …)")
    parser.add_argument("--out", required=True, help="output folder (projection, checkpoint, history)")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1, help="1: MIMIC-CXR, 2: OpenI (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: XrayGPT's)")
    parser.add_argument("--batch-size", type=int, default=None, help="per process (default: XrayGPT's)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N records with a summary")
    parser.add_argument("--split", default="train", help="records of this split when the dataset has splits")
    parser.add_argument("--init-projection", default=None, help="projection.safetensors to start from (stage 2)")
    parser.add_argument("--cache", default=None, help="feature cache folder (default: <out>/features)")
    parser.add_argument("--encoder-config", default=None,
                        help="EncoderConfig JSON (default: MedCLIP's swin-tiny 224 px)")
    parser.add_argument("--dtype", default="bfloat16", help="LLM weights dtype on the GPU (default bfloat16)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from xraygpt_lab.data.readers.images import load_image, preprocess
    from xraygpt_lab.data.readers import open_dataset
    from xraygpt_lab.models.encoder import EncoderConfig
    from xraygpt_lab.models.llm import load_llm
    from xraygpt_lab.models.medclip import load_medclip_vision
    from xraygpt_lab.models.xraygpt import XrayGPT
    from xraygpt_lab.train.align import AlignmentSet, align_stage
    from xraygpt_lab.run_folder import load_weights, save_weights
    from xraygpt_lab.train.feature_cache import FeatureCache
    from xraygpt_lab.train.schedule import XRAYGPT_STAGE1, XRAYGPT_STAGE2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from accelerate import PartialState

    from xraygpt_lab.device import resolve_device

    # each process's own device: under `accelerate launch` on 4 GPUs, rank k loads onto cuda:k (a plain
    # "cuda" would put four copies of the 7B model on the first GPU); XRAYGPT_DEVICE=cpu forces the CPU
    device = PartialState(cpu=resolve_device().type == "cpu").device
    cuda = device.type == "cuda"
    dtype = getattr(torch, args.dtype) if cuda else torch.float32

    encoder_config = None
    if args.encoder_config:
        encoder_config = EncoderConfig.from_dict(json.loads(Path(args.encoder_config).read_text()))
    encoder = load_medclip_vision(args.medclip, encoder_config=encoder_config, device=device)
    size = encoder.config.image_size

    dataset = open_dataset(args.data)
    records = [r for r in dataset.records if r.summary and r.image_path is not None
               and (r.split in (None, args.split))]
    if args.limit:
        records = records[: args.limit]
    if not records:
        raise SystemExit(f"{args.data}: no records with an image and a summary (layout {dataset.layout}, "
                         f"split {args.split!r}; skipped: {dataset.skipped})")
    cache = FeatureCache(args.cache or out / "features", encoder)
    pixels = [preprocess(load_image(r.image_path), size) for r in records]  # each [1, S, S]
    features = cache.features(pixels)  # [M, N, d_vision], computed once per image
    data = AlignmentSet(features=features, targets=[r.summary for r in records])

    llm, tokenizer = load_llm(args.llm, dtype=dtype, device=device)
    model = XrayGPT(encoder, llm, tokenizer).to(device)
    model.projection.float()  # the one trainable layer stays fp32; autocast runs it in bf16
    if args.init_projection:
        state, _ = load_weights(args.init_projection)
        model.projection.load_state_dict({k.removeprefix("projection."): v for k, v in state.items()})
    base = XRAYGPT_STAGE1 if args.stage == 1 else XRAYGPT_STAGE2
    stage = base.scaled(steps=args.steps or base.steps, batch_size=args.batch_size or base.batch_size)
    result = align_stage(model, data, stage, checkpoint=out / f"stage{args.stage}.ckpt", progress=not args.quiet)

    if PartialState().is_main_process:
        # same keys as a run folder's projection.safetensors (``weight``, ``bias``), so runs.load_run reads it
        weights = {k: v.detach().float().cpu().contiguous() for k, v in model.projection.state_dict().items()}
        save_weights(out / "projection.safetensors", weights, metadata={"stage": str(args.stage)})
        summary = {"stage": args.stage, "steps_done": result.steps_done, "finished": result.finished,
                   "records": len(records), "layout": dataset.layout, "feature_cache_hits": cache.hits,
                   "seconds": round(result.seconds, 1), "last_loss": result.history[-1]["loss"] if result.history else None}
        (out / f"stage{args.stage}_history.json").write_text(json.dumps(result.history))
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
