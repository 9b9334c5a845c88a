"""``xraygpt-lab chat``: a terminal conversation about one radiograph (works with piped stdin).

The conversation is :class:`xraygpt_lab.models.xraygpt.ChatSession`, the same session the notebook
chat panel wraps: same prompts, same trimming of old turns, same answers.

An image unlike the run's training films (``models.ood``) gets a warning on stderr before the chat.
"""
from __future__ import annotations

from pathlib import Path

from xraygpt_lab.cli._common import add_device_argument, add_run_argument, positive_int

HELP = "Type a question. /reset starts over, /quit ends."


def register(subparsers) -> None:
    """Add the ``chat`` sub-command."""
    p = subparsers.add_parser(
        "chat", help="chat about one image with a trained run",
        description=f"Multi-turn chat about IMAGE in XrayGPT's ###Patient/###Doctor template. {HELP} "
                    "Questions are read line by line from stdin, so it also works in a pipe.")
    add_run_argument(p)
    p.add_argument("--image", type=Path, required=True, help="radiograph file")
    p.add_argument("--max-new-tokens", type=positive_int, default=160, help="longest answer in tokens (160)")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from xraygpt_lab.data.readers.images import load_image
    from xraygpt_lab.models.xraygpt import ChatInputError, ChatSession
    from xraygpt_lab.runs import load_run, ood_detector

    shape = load_image(args.image).shape  # fail on a bad file before loading the model
    model = load_run(args.run, device=args.device)
    pixels = model.image_processor(args.image)  # [1, C, S, S]: MedCLIP's grey, or BLIP-2's RGB for the release
    detector = ood_detector(model, progress=True, log=lambda m: print(m, file=sys.stderr, flush=True))
    if detector is not None:
        warning = detector.check(model.encoder, pixels, [shape])[0].warning()
        if warning:
            print(f"warning: {args.image}: {warning}", file=sys.stderr, flush=True)
    session = ChatSession(model, pixels, max_new_tokens=args.max_new_tokens)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Chatting about {args.image}. {HELP}")
    room = model.context_length - model.num_image_tokens
    if args.max_new_tokens >= room:  # the session lowers each budget to what the context leaves
        print(f"(--max-new-tokens {args.max_new_tokens} is more than the model's context allows: it holds "
              f"{model.context_length} tokens for the image ({model.num_image_tokens}), the conversation and the "
              f"answer together, so each answer gets what is left, fewer than {room} tokens)", flush=True)
    while True:
        if interactive:
            print("Patient: ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        question = line.strip()
        if not question:
            continue
        if question == "/quit":
            break
        if question == "/reset":
            session.reset()
            print("(conversation reset)", flush=True)
            continue
        try:
            reply = session.ask(question)
        except ChatInputError as exc:  # e.g. a question too long for the context: say so, keep chatting
            print(f"({exc})", flush=True)
            continue
        if reply.dropped_turns:
            print(f"(context full: dropped the {reply.dropped_turns} oldest turn(s))", flush=True)
        if reply.max_new_tokens < session.max_new_tokens:
            print(f"(answer limited to {reply.max_new_tokens} tokens by the model's context)", flush=True)
        print(f"Doctor: {reply.text}", flush=True)
    return 0
