"""The compare page's model: stage outputs as policies, the demo's test contexts, and each reply's levels.

A policy is a folder a stage wrote (its ``stage.json`` says which stage): an SFT, PPO, DPO or T5-init
generator (``emprl.common.policy`` loads it, ``generate_responses`` samples, as ``emprl.chat`` does) or
the ETHREED baseline (its own model and vocabulary). A reply is graded by the identifiers (ER/IP/EX
levels, and R_emp against the gold levels of the reference when the context is a test context) and,
on the demo corpus, by the phrase-bank oracle (``emprl.evaluate.judges``; docs/judges.md, docs/app.md).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field

from emprl.common.errors import UserError
from emprl.common.io import read_stage_stamp
from emprl.common.mechanisms import MECHANISMS
from emprl.common.policy import GenerationSettings

logger = logging.getLogger("emprl.app")

GENERATOR_STAGES = ("sft", "ppo", "dpo", "init_model")
ETHREED_STAGE = "ethreed"


def check_policy_folder(folder: str) -> str:
    """The stage that wrote ``folder`` when it is a policy; else a UserError saying what it is."""
    folder = str(folder).strip()
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such folder (expected a stage output such as outputs/demo/t5_sft)")
    stamp = read_stage_stamp(folder)
    if not stamp or not stamp.get("complete"):
        raise UserError(f"{folder}: not a stage output (no complete stage.json: a stage that finished writes one)")
    stage = str(stamp.get("stage", ""))
    if stage == ETHREED_STAGE:
        return stage
    if stage not in GENERATOR_STAGES:
        raise UserError(f"{folder}: the output of stage '{stage}', not a dialogue policy "
                        f"(expected one of {', '.join(GENERATOR_STAGES + (ETHREED_STAGE,))})")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UserError(f"{folder}: stage '{stage}' output without config.json (not a generator folder)")
    return stage


def find_policies(root: str) -> list[str]:
    """The policy folders directly under ``root`` (e.g. outputs/demo), sorted."""
    found = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            try:
                check_policy_folder(folder)
            except UserError:
                continue
            found.append(folder)
    return found


class Policy:
    """One loaded policy: ``reply(turns, settings)`` -> the listener's next turn."""

    def __init__(self, folder: str, device: str = "cpu"):
        self.folder, self.stage = folder, check_policy_folder(folder)
        self.name = os.path.basename(os.path.normpath(folder))
        if self.stage == ETHREED_STAGE:
            from emprl.baselines.ethreed.model import ETHREED
            from emprl.baselines.ethreed.vocab import Vocab

            self.model = ETHREED.from_pretrained(folder, device=device)
            self.vocab = Vocab.load(os.path.join(folder, "vocab.json"))
            self.notes = "ETHREED: sampling without top-p; policy draw seeded"
        else:
            from emprl.common.policy import load_policy, prompt_builder_for

            self.model, self.tokenizer, enc_dec = load_policy(folder, device=device)
            self.builder = prompt_builder_for(folder, self.tokenizer, enc_dec)
            self.notes = ""

    def reply(self, turns: list[str], settings: GenerationSettings) -> str:
        if self.stage == ETHREED_STAGE:
            from emprl.baselines.ethreed.batching import encode_example
            from emprl.baselines.ethreed.loop import generate_responses as ethreed_generate

            item = encode_example({"context": list(turns), "response": "", "emotion": None}, self.vocab)
            return ethreed_generate(self.model, [item], self.vocab, batch_size=1, max_len=settings.max_new_tokens,
                                    do_sample=settings.do_sample, top_k=settings.top_k,
                                    temperature=settings.temperature, seed=settings.seed, progress=False)[0]
        from emprl.common.policy import generate_responses

        return generate_responses(self.model, self.tokenizer, self.builder, [list(turns)], settings, batch_size=1,
                                  progress=False)[0]


@dataclass
class Example:
    """A test example of the data: its turns, reference, and the reference's gold (and true) levels."""

    label: str
    turns: list[str]
    reference: str
    gold: list[int] | None = None
    true: list[int] | None = None


@dataclass
class Graders:
    """The identifiers (levels, R_emp) and the phrase-bank oracle; either may be missing."""

    identifiers: object | None = None  # emprl.evaluate.judges.IdentifiersJudge
    oracle: object | None = None  # emprl.evaluate.judges.PhraseBankJudge

    def gold_of(self, start: Example) -> list[int] | None:
        """The reference's gold levels: the labelled columns, else the identifiers' levels on it (as the
        label stage computes them), cached on ``start``; None without identifiers."""
        if start.gold is None and self.identifiers is not None:
            start.gold = self.grade(start.turns, [start.reference], None, False)[0]["levels"]
        return start.gold

    def grade(self, turns: list[str], replies: list[str], gold: list[int] | None, with_oracle: bool) -> list[dict]:
        """Per reply: ``levels`` (identifiers), ``r_emp`` (against ``gold``), ``oracle`` levels, or None each."""
        out = [{"levels": None, "r_emp": None, "oracle": None} for _ in replies]
        if self.identifiers is not None and replies:
            from emprl.data import serialize_context

            reward = self.identifiers.reward
            tok = next(iter(reward.tokenizers.values()))
            context = serialize_context(list(turns), tok, self.identifiers.max_context_len, *self.identifiers.tags)
            golds = [gold or [0, 0, 0]] * len(replies)
            r_emp, levels = reward.reward_and_levels([context] * len(replies), replies, golds)
            for row, r, lv in zip(out, r_emp.tolist(), levels.tolist()):
                row["levels"], row["r_emp"] = lv, (r if gold is not None else None)
        if self.oracle is not None and with_oracle:
            for row, reply in zip(out, replies):
                row["oracle"] = self.oracle.level(reply)
        return out


def load_test_contexts(spec: str, limit: int = 200) -> list[Example]:
    """The first ``limit`` test examples of ``spec`` (FORMAT:PATH), with gold/true level columns if any."""
    from emprl.data import load_dialogues
    from emprl.label import TRUE_COLUMNS, attach_true_levels

    rows = load_dialogues(spec, splits=("test",))["test"]
    rows = rows.select(range(min(limit, len(rows))))
    if TRUE_COLUMNS[0] not in rows.column_names:
        rows = attach_true_levels(rows, spec, "test", strict=False)
    columns = rows.column_names
    out = []
    for i, row in enumerate(rows):
        last = " ".join(row["context"][-1].split())
        gold = [int(row[m]) for m in MECHANISMS] if all(m in columns for m in MECHANISMS) else None
        true = [int(row[c]) for c in TRUE_COLUMNS] if all(c in columns for c in TRUE_COLUMNS) else None
        out.append(Example(f"{i + 1}. {last[:90]}", list(row["context"]), row["response"], gold, true))
    return out


@dataclass
class Turn:
    """One round of the dialogue: what each policy answered, graded, under which settings."""

    replies: dict[str, str]
    grades: dict[str, dict]
    settings: dict
    speaker: str | None = None  # the speaker's message that opened the round (None: a test context)


@dataclass
class Dialogue:
    """The same speaker turns for every policy; each policy's own replies in its own history."""

    policies: list[str]
    start: Example | None = None
    speaker_turns: list[str] = field(default_factory=list)
    rounds: list[Turn] = field(default_factory=list)

    def history(self, folder: str) -> list[str]:
        """The turns policy ``folder`` answers next: the test context, then each round's speaker turn and
        this policy's own reply."""
        turns = list(self.start.turns) if self.start else []
        for rnd in self.rounds:
            if rnd.speaker is not None:
                add_speaker_turn(turns, rnd.speaker)
            if rnd.replies[folder]:  # an empty reply is no turn (as in emprl.chat)
                turns.append(rnd.replies[folder])
        return turns


def add_speaker_turn(turns: list[str], text: str) -> None:
    """Append the speaker's ``text``; after an unanswered speaker turn (odd count) it joins that turn, so
    roles keep alternating (emprl.chat's rule)."""
    if len(turns) % 2 == 1:
        turns[-1] = f"{turns[-1]} {text}"
    else:
        turns.append(text)


class Comparer:
    """Policies loaded once each, the graders, and one round of replies at a time."""

    def __init__(self, graders: Graders, device: str = "cpu"):
        self.graders, self.device = graders, device
        self._policies: dict[str, Policy] = {}
        self.lock = threading.Lock()

    def policy(self, folder: str) -> Policy:
        """The loaded policy of ``folder`` (loaded on first use; the caller holds ``self.lock``)."""
        key = os.path.abspath(folder)
        if key not in self._policies:
            logger.info("loading %s", folder)
            self._policies[key] = Policy(folder, device=self.device)
        return self._policies[key]

    def play(self, dialogue: Dialogue, speaker: str | None, settings: GenerationSettings) -> Turn:
        """The next round: every policy answers its own history (plus ``speaker``), graded."""
        turns_of = {}
        for folder in dialogue.policies:
            turns = dialogue.history(folder)
            if speaker:
                add_speaker_turn(turns, speaker)
            turns_of[folder] = turns
            if not turns:
                raise UserError("type a message or pick a test context first")
        with self.lock:  # one generation at a time: a CPU has no room for two
            replies = {f: self.policy(f).reply(turns_of[f], settings) for f in dialogue.policies}
            first = not dialogue.rounds and speaker is None and dialogue.start is not None
            gold = self.graders.gold_of(dialogue.start) if first else None
            oracle = dialogue.start is not None
            grades = {f: self.graders.grade(turns_of[f], [replies[f]], gold, oracle)[0] for f in dialogue.policies}
        return Turn(replies, grades, json.loads(json.dumps(settings.as_dict())), speaker)
