"""Talk to a generator in the terminal: you are the speaker, the model answers as the listener.

    python -m emprl.chat --model outputs/demo/sft
    printf 'I lost my job\\n/quit\\n' | python -m emprl.chat --model outputs/demo/sft

The whole dialogue so far is the context of each reply (oldest turns dropped to fit the prompt).
``/reset`` starts a new dialogue, ``/quit`` or end of input leaves.
"""

from __future__ import annotations

import sys

from emprl.common.errors import run_cli
from emprl.common.policy import generate_responses
from emprl.generate import ArgumentParser, add_model_arguments, load_for_generation, settings_from

USER_MARK, BOT_MARK = "you> ", "listener> "
NO_REPLY = "(no reply)"


def main(argv: list[str] | None = None, stdin=None, stdout=None) -> list[str]:
    parser = ArgumentParser(prog="emprl.chat", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    settings = settings_from(args)
    model, tokenizer, builder = load_for_generation(args)

    def say(text: str = "", end: str = "\n") -> None:
        stdout.write(text + end)
        stdout.flush()

    say(f"EmpRL chat with {args.model}. Tell the listener how you feel; /reset starts over, /quit leaves.")
    interactive = bool(getattr(stdin, "isatty", lambda: False)())
    history: list[str] = []  # alternating turns, the speaker's first; an unanswered turn stays last
    replies: list[str] = []
    while True:
        say(USER_MARK, end="")
        line = stdin.readline()
        if not line:  # end of input
            say()
            break
        text = line.strip()
        if not interactive:  # scripted input: echo it so the transcript reads as a dialogue
            say(text)
        if text == "/quit":
            break
        if text == "/reset":
            history = []
            say("(new dialogue)")
            continue
        if not text:
            continue
        if len(history) % 2 == 1:  # the last turn got no reply: keep roles alternating
            history[-1] = f"{history[-1]} {text}"
        else:
            history.append(text)
        reply = generate_responses(model, tokenizer, builder, [list(history)], settings, batch_size=1,
                                   progress=False)[0]
        if settings.seed is not None:  # a new draw for the next turn, still reproducible
            settings.seed += 1
        if reply:
            history.append(reply)
        replies.append(reply)
        say(BOT_MARK + (reply or NO_REPLY))
    return replies


if __name__ == "__main__":
    run_cli(main)
