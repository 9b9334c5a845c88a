"""``xraygpt-lab release``: point a run folder at the released XrayGPT's files.

``release init`` reads the released weight files (``models.released``), checks every key and
shape, prints the unused keys, and writes ``RUN/release.json`` (paths, sizes read off the
tensors, dtypes, byte counts, modification times and sha256 checksums; a later load refuses a
file that changed). ``describe``, ``chat`` and ``explain`` then
load the released model with ``--run RUN``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xraygpt_lab.cli._common import positive_int


def register(subparsers) -> None:
    """Add the ``release`` sub-command group."""
    p = subparsers.add_parser(
        "release", help="open the released XrayGPT (EVA ViT-g + BLIP-2 Q-Former + Vicuna) as a run folder",
        description="Work with the XrayGPT the authors released (MiniGPT-4's architecture).")
    sub = p.add_subparsers(dest="release_command", metavar="ACTION")
    init = sub.add_parser(
        "init", help="check the released files and write RUN/release.json",
        description="Read eva_vit_g.pth, the BLIP-2 Q-Former file and the XrayGPT checkpoint with "
                    "torch.load(weights_only=True), check every key and shape, list the keys the model "
                    "does not use, and write RUN/release.json for `describe --run RUN`.")
    init.add_argument("--vit", type=Path, required=True, help="eva_vit_g.pth (EVA ViT-g, LAVIS layout)")
    init.add_argument("--qformer", type=Path, required=True,
                      help="blip2_pretrained_flant5xxl.pth (Q-Former, query tokens, ln_vision)")
    init.add_argument("--checkpoint", type=Path, required=True,
                      help="the XrayGPT (or MiniGPT-4) checkpoint holding llama_proj")
    init.add_argument("--llm", type=Path, required=True, help="the Vicuna folder (Hugging Face LLaMA layout)")
    init.add_argument("--out", type=Path, required=True,
                      help="run folder to write (new, empty, or an earlier release folder)")
    init.add_argument("--vision-heads", type=positive_int, default=None,
                      help="ViT attention heads (default: width / 88, EVA-g's head width)")
    init.add_argument("--qformer-heads", type=positive_int, default=None,
                      help="Q-Former attention heads (default: width / 64, BERT's head width)")
    init.add_argument("--vision-depth", type=positive_int, default=None,
                      help="ViT blocks to use (default: all but the last of EVA's own file, as BLIP-2; "
                           "all of a built model's dump, which holds ln_vision too)")
    init.add_argument("--no-checksums", action="store_true", help="skip the sha256 checksums (large files)")
    init.set_defaults(func=run_init)
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])


def run_init(args: argparse.Namespace) -> int:
    from xraygpt_lab.atomic import atomic_write
    from xraygpt_lab.models.llm import check_llm_folder
    from xraygpt_lab.models.released import (MANIFEST, MANIFEST_FORMAT, ReleasedLoadError, _llm_config, file_record,
                                             inspect_release, llm_parameter_count, read_manifest)

    out: Path = args.out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and read_manifest(out / MANIFEST) is None)):
        raise ReleasedLoadError(f"{out} exists and holds files this command did not write: give a new or empty folder")
    if not args.llm.is_dir():
        raise ReleasedLoadError(f"LLM folder {args.llm} does not exist "
                                "(the radiology Vicuna-7B in Hugging Face layout)")
    llm_config = _llm_config(args.llm)
    check_llm_folder(args.llm)  # weights, shards and tokenizer, on the meta device (free at 7B)
    report = inspect_release(args.vit, args.qformer, args.checkpoint, vision_heads=args.vision_heads,
                             qformer_heads=args.qformer_heads, vision_depth=args.vision_depth)
    if int(llm_config.get("hidden_size", -1)) != report.sizes.llm_width:
        raise ReleasedLoadError(f"{args.checkpoint}: 'llama_proj.weight' projects to {report.sizes.llm_width}, but "
                                f"the LLM in {args.llm} is {llm_config.get('hidden_size')} wide")
    checksums = not args.no_checksums
    llm_files = {p.name: file_record(p, checksums) for p in sorted(args.llm.iterdir())
                 if p.is_file() and not p.name.startswith(".")}  # not a file manager's .DS_Store
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "files": {
            "vit": file_record(args.vit, checksums),
            "qformer": file_record(args.qformer, checksums),
            "checkpoint": file_record(args.checkpoint, checksums),
            "llm": {"path": str(args.llm.resolve()), "files": llm_files},
        },
        "sizes": report.sizes.to_dict(),
        "llm": {"hidden_size": llm_config.get("hidden_size"), "num_hidden_layers": llm_config.get("num_hidden_layers"),
                "parameters": llm_parameter_count(llm_config)},
        "dtype": {"cuda": "bfloat16 (ViT, LLM); float32 (Q-Former, llama_proj)", "cpu": "float32"},
        "unused": [str(group) for group in report.unused],
    }
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(text))
    s = report.sizes
    if args.vision_depth is None and s.vision_depth == s.vision_blocks_in_file:
        print(f"EVA ViT: the file holds ln_vision too, so it is taken for a built model's dump, already cut "
              f"to the blocks it uses: all {s.vision_depth} are used (--vision-depth to choose)")
    print(f"EVA ViT: {s.vision_depth} of {s.vision_blocks_in_file} blocks, width {s.vision_width}, "
          f"{s.vision_heads} heads, "
          f"{s.image_size} px / patch {s.patch_size}; Q-Former: {s.qformer_layers} layers, width {s.qformer_width}, "
          f"{s.num_query_tokens} queries, cross-attention every {s.cross_attention_frequency}; "
          f"llama_proj {s.qformer_width} -> {s.llm_width}")
    for group in report.unused:
        print(group)
    print(f"wrote {out / MANIFEST}")
    return 0
