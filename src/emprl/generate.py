"""Sample listener replies for a data split and write them as JSON lines.

    python -m emprl.generate --model outputs/demo/sft --data empathetic_dialogues:PATH --split test \\
        --out preds.jsonl [--max_examples N] [--top_k 20 --top_p 1.0 --temperature 0.9 --seed 42]

One object per line: ``conv_id``, ``context`` (list of turns), ``reference`` and ``response``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import typing

from emprl.common.errors import UserError, run_cli
from emprl.common.policy import GenerationSettings

logger = logging.getLogger("emprl.generate")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes become a one-line UserError (stderr line, exit code 2)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, device and decoding flags shared by ``emprl.generate`` and ``emprl.chat``; the decoding
    flags are the fields of GenerationSettings, with its defaults (the paper's)."""
    parser.add_argument("--model", required=True, help="a generator folder (SFT or PPO output)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default=None, choices=["auto", "float32", "float16", "bfloat16"])
    defaults, hints = GenerationSettings(), typing.get_type_hints(GenerationSettings)
    for f in dataclasses.fields(GenerationSettings):
        kind = next(t for t in (bool, int, float) if hints[f.name] is t or t in typing.get_args(hints[f.name]))
        parser.add_argument(f"--{f.name}", type=parse_bool if kind is bool else kind, default=getattr(defaults, f.name),
                            metavar="true|false" if kind is bool else None, help=f.metadata.get("help"))
    parser.add_argument("--max_source_tokens", type=positive_int, default=None,
                        help="prompt budget (default: what the model was trained with)")
    parser.add_argument("--system_prompt", default=None, help="system message for chat templates")


def settings_from(args: argparse.Namespace) -> GenerationSettings:
    try:  # ranges and the sampling rules of GenerationSettings: one line naming the flag
        return GenerationSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GenerationSettings)})
    except ValueError as err:
        raise UserError(f"command line: {err}") from None


def load_for_generation(args: argparse.Namespace):
    """-> (model, tokenizer, PromptBuilder) for the folder named by --model."""
    import os

    from emprl.common.policy import load_policy, pick_device, prompt_builder_for

    if not os.path.isdir(args.model):
        raise UserError(f"--model: folder '{args.model}' does not exist")
    model, tokenizer, enc_dec = load_policy(args.model, dtype=args.dtype, device=pick_device(args.device))
    builder = prompt_builder_for(args.model, tokenizer, enc_dec, max_source_tokens=args.max_source_tokens,
                                 system_prompt=args.system_prompt)
    return model, tokenizer, builder


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(prog="emprl.generate", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="FORMAT:PATH, e.g. empathetic_dialogues:data/ed")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--max_examples", type=positive_int, default=None)
    parser.add_argument("--batch_size", type=positive_int, default=16)
    parser.add_argument("--on_bad_rows", default="error", choices=["error", "skip"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from emprl.common.io import atomic_write_jsonl
    from emprl.common.policy import generate_responses
    from emprl.data import load_dialogues

    settings = settings_from(args)
    if os.path.isdir(args.out):
        raise UserError(f"--out: '{args.out}' is a folder; expected the path of a JSONL file to write")
    data = load_dialogues(args.data, args.on_bad_rows, splits=(args.split,))  # only the split it answers
    if args.split not in data:
        raise UserError(f"--data: {args.data} has no '{args.split}' split (has {', '.join(data)})")
    rows = data[args.split]
    if len(rows) == 0:
        raise UserError(f"--data: the {args.split} split of {args.data} is empty; nothing to generate")
    if args.max_examples:
        rows = rows.select(range(min(args.max_examples, len(rows))))
    model, tokenizer, builder = load_for_generation(args)
    responses = generate_responses(model, tokenizer, builder, list(rows["context"]), settings,
                                   batch_size=args.batch_size)
    out = [{"conv_id": r["conv_id"], "context": r["context"], "reference": r["response"], "response": resp}
           for r, resp in zip(rows, responses)]
    atomic_write_jsonl(args.out, out)
    logger.info("wrote %d responses to %s (%d empty)", len(out), args.out, sum(not r for r in responses))
    return out


if __name__ == "__main__":
    run_cli(main)
