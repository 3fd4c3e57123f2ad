"""Compose the bundled demo data (EPITOME-, EmpatheticDialogues-, DailyDialog- and PEC-format files).

Everything the data says is original text written for EmpRL; nothing is copied from the real
datasets. The output matches the official release formats so the same readers parse the real data
and ours. The text lives in YAML files next to this script (``tools/demo_text/``); this script only
composes it, and is not part of the installed package.

    python tools/compose_demo.py --out src/emprl/demo_data

regenerates every file (and DATA_CARD.md) byte for byte: one seeded ``random.Random`` per part,
sorted iterations, no clocks.

EPITOME pairs are of two kinds:
  * composed: a hand-written seeker situation (slot-filled) plus one fragment per mechanism at the
    chosen level (warmth for ER, understanding for IP, a question for EX) and optional neutral advice,
    in varied orders. Fragments are label-consistent: only EX fragments ask questions, only ER
    fragments carry warmth, and level-0 mechanisms contribute nothing.
  * hand-written: whole responses labelled by hand with inline tags, ``<er2>...</er2>`` marking the
    span that justifies an emotional-reactions level of 2 (the span becomes the rationale).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import re
import tempfile
from collections import Counter
from pathlib import Path

import yaml

SEED = 20250611
REPO = Path(__file__).resolve().parents[1]
DEMO_DATA_DIR = REPO / "src" / "emprl" / "demo_data"
TEXT_DIR = Path(__file__).resolve().parent / "demo_text"


def _load(name: str) -> dict:
    with open(TEXT_DIR / name, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


# ==================================================================================================
# Text banks (tools/demo_text/*.yaml; each file says what its banks hold)
# ==================================================================================================

_EPITOME = _load("epitome.yaml")
SITUATIONS = [{"topic": s["topic"], "post": s["post"], "event": s["event"], "feels": s["feels"],
               "advice": s["advice"], "mine": s.get("mine", []), "valence": s.get("valence", "neg"),
               "slots": s.get("slots", {})} for s in _EPITOME["situations"]]
POST_PREFIXES, POST_SUFFIXES = _EPITOME["post_prefixes"], _EPITOME["post_suffixes"]
ER_BANK, IP_BANK, EX_BANK = _EPITOME["er_bank"], _EPITOME["ip_bank"], _EPITOME["ex_bank"]
SHARED, SHARED_POS = _EPITOME["shared"], _EPITOME["shared_pos"]
GENERIC_ADVICE, POS_ADVICE = _EPITOME["generic_advice"], _EPITOME["pos_advice"]
HAND_PAIRS = [(p["seeker"], p["responses"]) for p in _EPITOME["hand_pairs"]]

ED_SCRIPTS = _load("empathetic_dialogues.yaml")["ed_scripts"]

_LARGE = _load("empathetic_dialogues_large.yaml")
CUE_SENTENCES = _LARGE["cue_sentences"]
SPEAKER_OPENERS, FOLLOWUP_OPENERS = _LARGE["speaker_openers"], _LARGE["followup_openers"]
FOLLOWUP_TOPICAL, FEEL_EMOTION = _LARGE["followup_topical"], _LARGE["feel_emotion"]

DAILYDIALOG = _load("dailydialog.yaml")["dailydialog"]
_PEC = _load("pec.yaml")
PEC, PEC_PERSONAS = _PEC["pec"], _PEC["pec_personas"]

DATA_CARD = (TEXT_DIR / "DATA_CARD.md.in").read_text(encoding="utf-8")

# ==================================================================================================
# Sizes and weights
# ==================================================================================================

# Level counts for 600 pairs. The real release is skewed (ER 2037/895/152, IP 1626/113/1345, EX 2604/104/376
# of 3,084); a copy of that skew left the identifiers blind to the rare levels (ER strong, IP weak, EX weak),
# while the large corpus uses every level about a third of the time, so their gold matched the composed truth
# on only 0.62-0.70 of the test references. The demo therefore balances the levels (docs/rl-effect.md,
# "The testbed"). The composer fills whatever the hand-written pairs leave.
EPITOME_TARGET = {"er": (220, 190, 190), "ip": (210, 190, 200), "ex": (220, 190, 190)}
EPITOME_FILENAMES = {"er": "emotional-reactions-reddit.csv", "ip": "interpretations-reddit.csv",
                     "ex": "explorations-reddit.csv"}

# Large corpus: the level each cue asks for, how often the level follows it, and how often each cue is drawn.
LARGE_CUE_LEVEL = {"er": {"high": 2, "none": 1, "low": 0}, "ip": {"named": 2, "vague": 1, "none": 0},
                   "ex": {"more": 2, "none": 1, "advice": 0}}
# Share of replies whose level follows the cue; the rest draw a level uniformly (which may match too).
LARGE_FOLLOW_CUE = 0.65
LARGE_CUE_WEIGHTS = {"er": {"high": 35, "none": 35, "low": 30}, "ip": {"named": 40, "vague": 25, "none": 35},
                     "ex": {"more": 30, "none": 35, "advice": 35}}

# ~4,600/680/1,200 replies: the test split is sized for a paired R_emp effect of ~+0.012 (per-context SD of a
# difference ~0.135 needs ~1,000 contexts for 80% power); validation for choosing settings without the test split.
LARGE_SPLIT_CONVS = {"train": 3500, "valid": 520, "test": 920}
LARGE_FOUR_TURN_SHARE = 0.3   # the rest are one speaker turn and one reply
LARGE_MAX_REPLY_WORDS = 45    # keeps target sequences short for the small policy's PPO
LARGE_SEED_OFFSET = "ed-large"

# ==================================================================================================
# Composition
# ==================================================================================================

MECHS = ("er", "ip", "ex")
MECH_NAMES = {"er": "emotional_reactions", "ip": "interpretations", "ex": "explorations"}
_TAG = re.compile(r"<(er|ip|ex)([12])>(.*?)</\1\2>", re.S)
# Sympathy phrases that only ER fragments may contain (checked on every level-0 ER response).
# Phrases of understanding that only IP fragments may contain (checked on level-0 IP responses).
UNDERSTANDING_MARKERS = re.compile(r"\b(I understand|I get it|sounds like|must (be|feel|have)|I know (how|what|the "
                                   r"feeling)|been there|I can relate|makes sense|I hear you|no wonder|same here|"
                                   r"similar)\b", re.I)
WARMTH_MARKERS = re.compile(r"\b(sorry|hugs?|my heart|sending (you )?(so much |all my )?(love|hugs|warmth|strength)|"
                            r"proud of you|happy for you|congrat\w*)\b", re.I)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, values: dict) -> str:
    out = template.format(**values)
    return _cap(out) if template.startswith("{") else out


def parse_hand_response(tagged: str) -> tuple[str, dict[str, int], dict[str, list[str]]]:
    """Strip the inline tags; return the text, the level per mechanism and the rationale spans."""
    levels, spans = dict.fromkeys(MECHS, 0), {m: [] for m in MECHS}
    for mech, level, span in _TAG.findall(tagged):
        levels[mech] = max(levels[mech], int(level))
        spans[mech].append(span)
    text = _TAG.sub(lambda m: m.group(3), tagged)
    if "<" in text or ">" in text:
        raise ValueError(f"unbalanced tag in hand-written response: {tagged!r}")
    return text, levels, spans


def _random_id(rng: random.Random, length: int, used: set[str]) -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    while True:
        ident = "".join(rng.choice(alphabet) for _ in range(length))
        if ident not in used:
            used.add(ident)
            return ident


def _slot_fills(rng: random.Random, slots: dict) -> dict:
    values = {}
    for name in sorted(slots):
        choice = rng.choice(slots[name])
        values.update(choice if isinstance(choice, dict) else {name: choice})
    return values


def _seeker_instance(rng: random.Random, sit: dict) -> dict:
    values = _slot_fills(rng, sit["slots"])
    valence = sit["valence"]
    post = rng.choice(POST_PREFIXES[valence]) + _fill(sit["post"], values) + rng.choice(POST_SUFFIXES[valence])
    if rng.random() < 0.15:  # some seekers write in lower case, as on the forums
        post = post.lower()
    event = sit["event"].format(**values)
    return {"sit": sit, "post": post, "event": event, "feel": rng.choice(sit["feels"])}


def _compose_response(rng: random.Random, inst: dict, levels: dict[str, int],
                      n_advice: int | None = None) -> tuple[str, dict[str, str]]:
    """A response with one fragment per mechanism at its level; ``n_advice`` neutral sentences
    (drawn when None: 1-2 for an all-zero response, else 0 or 1)."""
    sit, valence = inst["sit"], inst["sit"]["valence"]
    shared = sit["mine"] or (SHARED_POS if valence == "pos" else SHARED[sit["topic"]])
    banks = {"er": ER_BANK, "ip": IP_BANK, "ex": EX_BANK}
    templates = {m: rng.choice(banks[m][valence][lvl]) for m, lvl in levels.items() if lvl}
    if n_advice is not None:
        pass
    elif not any(levels.values()):
        n_advice = rng.choice((1, 1, 2))
    else:
        n_advice = 1 if rng.random() < 0.45 else 0
    # Mostly advice written for the situation, sometimes a generic line.
    own, generic = list(sit["advice"]), list(POS_ADVICE if valence == "pos" else GENERIC_ADVICE)
    advice = []
    for _ in range(n_advice):
        pool = own if own and rng.random() < 0.7 else generic
        advice.append(pool.pop(rng.randrange(len(pool))))
    orders = [("er", "ip", "adv", "ex"), ("ex", "er", "ip", "adv"), ("ip", "er", "adv", "ex"),
              ("adv", "er", "ip", "ex"), ("er", "ex", "ip", "adv"), ("ip", "adv", "ex", "er")]
    order = rng.choices(orders, weights=(50, 12, 14, 10, 8, 6))[0]
    values = {"event": inst["event"], "Event": _cap(inst["event"]), "feel": inst["feel"], "mine": rng.choice(shared)}
    pieces: list[tuple[str | None, str]] = []
    for key in order:
        if key == "adv":
            pieces.extend((None, a) for a in advice)
        elif key in templates:
            pieces.append((key, _fill(templates[key], values)))
            if "vent}" in templates[key]:  # name the event once, then refer back to it
                values.update(event="all this", Event="All this")
    style = rng.random()
    if style < 0.12:  # all lower case
        pieces = [(k, t.lower()) for k, t in pieces]
    elif style < 0.22 and pieces[-1][1].endswith("."):  # no final full stop
        pieces[-1] = (pieces[-1][0], pieces[-1][1][:-1])
    text = " ".join(t for _, t in pieces)
    return text, {k: t for k, t in pieces if k}


def compose_epitome(seed: int = SEED) -> tuple[list[dict], dict]:
    """All EPITOME rows (one dict per pair with levels and rationales per mechanism) and a summary."""
    rng = random.Random(f"{seed}-epitome")
    used_sp, used_rp = set(), set()
    rows = []
    # Hand-written pairs first: they are fixed, the composer fills the remaining level counts.
    for seeker, responses in HAND_PAIRS:
        sp_id = _random_id(rng, 6, used_sp)
        for tagged in responses:
            text, levels, spans = parse_hand_response(tagged)
            rows.append({"sp_id": sp_id, "rp_id": _random_id(rng, 7, used_rp), "seeker_post": seeker,
                         "response_post": text, "levels": levels, "rationales": spans, "source": "hand"})
    n_hand = len(rows)
    hand_counts = {m: Counter(r["levels"][m] for r in rows) for m in MECHS}
    n_total = sum(EPITOME_TARGET["er"])
    columns = {}
    for m in MECHS:
        need = [EPITOME_TARGET[m][lvl] - hand_counts[m][lvl] for lvl in range(3)]
        if min(need) < 0 or sum(EPITOME_TARGET[m]) != n_total:
            raise ValueError(f"EPITOME targets for {m} are inconsistent with the hand-written pairs")
        column = [lvl for lvl in range(3) for _ in range(need[lvl])]
        rng.shuffle(column)
        columns[m] = column
    n_composed = n_total - n_hand
    # Seeker posts: cycle through the situations in a seeded order, each post getting 1-3 responses.
    order = list(range(len(SITUATIONS)))
    rng.shuffle(order)
    seen_posts, seen_pairs = set(), set()
    i, cursor = 0, 0
    while i < n_composed:
        sit = SITUATIONS[order[cursor % len(order)]]
        cursor += 1
        inst = _seeker_instance(rng, sit)
        while inst["post"] in seen_posts:
            inst = _seeker_instance(rng, sit)
        seen_posts.add(inst["post"])
        sp_id = _random_id(rng, 6, used_sp)
        for _ in range(min(rng.choices((1, 2, 3), weights=(45, 35, 20))[0], n_composed - i)):
            levels = {m: columns[m][i] for m in MECHS}
            text, spans = _compose_response(rng, inst, levels)
            while (inst["post"], text) in seen_pairs:
                text, spans = _compose_response(rng, inst, levels)
            seen_pairs.add((inst["post"], text))
            rows.append({"sp_id": sp_id, "rp_id": _random_id(rng, 7, used_rp), "seeker_post": inst["post"],
                         "response_post": text, "levels": levels,
                         "rationales": {m: [spans[m]] if m in spans else [] for m in MECHS}, "source": "composed"})
            i += 1
    rng.shuffle(rows)
    summary = {"pairs": len(rows), "hand": n_hand, "composed": n_composed,
               "seeker_posts": len({r["sp_id"] for r in rows}),
               "levels": {m: [sum(r["levels"][m] == lvl for r in rows) for lvl in range(3)] for m in MECHS}}
    return rows, summary


def epitome_files(rows: list[dict]) -> dict[str, bytes]:
    files = {}
    for m in MECHS:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["sp_id", "rp_id", "seeker_post", "response_post", "level", "rationales"])
        for r in rows:
            writer.writerow([r["sp_id"], r["rp_id"], r["seeker_post"], r["response_post"], r["levels"][m],
                             "|".join(r["rationales"][m])])
        files[f"epitome/{EPITOME_FILENAMES[m]}"] = buf.getvalue().encode("utf-8")
    return files


# -- EmpatheticDialogues --------------------------------------------------------------------------------

# Warm replies are written for every turn and questions not for the last, so warm is weighted lower.
ED_STYLE_WEIGHTS = {"w": 22, "u": 24, "q": 28, "n": 26}
ED_LENGTH_WEIGHTS = {2: 15, 3: 10, 4: 35, 5: 10, 6: 30}
ED_SPLIT_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}


def _ed_field(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"EmpatheticDialogues text must not contain quotes or newlines: {text!r}")
    return text.replace(",", "_comma_")


def compose_empathetic_dialogues(seed: int = SEED) -> tuple[dict[str, list[list[str]]], dict]:
    rng = random.Random(f"{seed}-ed")
    order = list(range(len(ED_SCRIPTS)))
    rng.shuffle(order)
    n_valid = n_test = max(1, round(len(order) * 0.1))
    split_of = {}
    for pos, k in enumerate(order):
        split_of[k] = "valid" if pos < n_valid else "test" if pos < n_valid + n_test else "train"
    rows: dict[str, list[list[str]]] = {s: [] for s in ED_SPLIT_FILES}
    styles = Counter()
    hit = 0
    for k in sorted(split_of, key=lambda k: (list(ED_SPLIT_FILES).index(split_of[k]), order.index(k))):
        script = ED_SCRIPTS[k]
        n_conv = rng.choice((3, 3, 4, 4))
        fills: list[dict] = []
        for _ in range(n_conv):
            values = _slot_fills(rng, script["slots"])
            for _retry in range(5):  # prefer fills not used yet for this script
                if values not in fills:
                    break
                values = _slot_fills(rng, script["slots"])
            fills.append(values)
            lengths = [n for n in ED_LENGTH_WEIGHTS if n <= len(script["turns"])]
            n_utt = rng.choices(lengths, weights=[ED_LENGTH_WEIGHTS[n] for n in lengths])[0]
            conv_id = f"hit:{hit}_conv:{2 * hit + rng.randint(0, 1)}"
            hit += 1
            speaker_ids = rng.sample(range(1, 900), 2)
            selfeval = "" if rng.random() < 0.15 else "_".join(
                "|".join(str(rng.randint(2 + j, 5)) for j in range(3)) for _ in range(2))
            prompt = _ed_field(script["prompt"].format(**values))
            for idx in range(1, n_utt + 1):
                turn = script["turns"][idx - 1]
                if isinstance(turn, dict):
                    allowed = sorted(turn)
                    style = rng.choices(allowed, weights=[ED_STYLE_WEIGHTS[s] for s in allowed])[0]
                    styles[style] += 1
                    text = turn[style]
                else:
                    text = rng.choice(turn)
                utterance = _ed_field(text.format(**values))
                rows[split_of[k]].append([conv_id, str(idx), script["emotion"], prompt,
                                          str(speaker_ids[(idx - 1) % 2]), utterance, selfeval, ""])
    summary = {s: {"conversations": len({r[0] for r in rs}), "utterances": len(rs),
                   "listener_turns": sum(int(r[1]) % 2 == 0 for r in rs),
                   "emotions": len({r[2] for r in rs})} for s, rs in rows.items()}
    summary["styles"] = dict(sorted(styles.items()))
    summary["all_emotions"] = sorted({s["emotion"] for s in ED_SCRIPTS})
    return rows, summary


def ed_files(rows: dict[str, list[list[str]]]) -> dict[str, bytes]:
    header = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"
    return {f"empathetic_dialogues/{name}": ("\n".join([header] + [",".join(r) for r in rows[split]]) + "\n")
            .encode("utf-8") for split, name in ED_SPLIT_FILES.items()}


# -- EmpatheticDialogues, large ------------------------------------------------------------------------


def _first_person(event: str) -> str:
    """'your friend not recognizing you' -> 'my friend not recognizing me' (events are written to the seeker)."""
    event = re.sub(r"\byou're\b", "I'm", event)
    event = re.sub(r"\byour\b", "my", event)
    return re.sub(r"\byou\b", "me", event)


def _fill_options(slots: dict) -> list[tuple[int, ...]]:
    """Every slot fill of a situation, as indices into its sorted slots' value lists."""
    names = sorted(slots)
    combos: list[tuple[int, ...]] = [()]
    for name in names:
        combos = [c + (i,) for c in combos for i in range(len(slots[name]))]
    return combos


def _fill_values(slots: dict, combo: tuple[int, ...]) -> dict:
    values = {}
    for name, i in zip(sorted(slots), combo):
        choice = slots[name][i]
        values.update(choice if isinstance(choice, dict) else {name: choice})
    return values


def _draw_cues(rng: random.Random) -> tuple[str, str, str]:
    return tuple(rng.choices(list(LARGE_CUE_WEIGHTS[m]), weights=list(LARGE_CUE_WEIGHTS[m].values()))[0]
                 for m in MECHS)


def _cue_text(rng: random.Random, cues: tuple[str, str, str], valence: str, feel: str) -> list[str]:
    sentences = [rng.choice(CUE_SENTENCES[m][cue][valence]).format(feel=feel)
                 for m, cue in zip(MECHS, cues) if cue in CUE_SENTENCES[m]]
    # The advice request reads best last; the other cue sentences come in any order.
    asks = [t for t in sentences if t.endswith("?")]
    rest = [t for t in sentences if not t.endswith("?")]
    rng.shuffle(rest)
    return rest + asks


def _levels_for(rng: random.Random, cues: tuple[str, str, str]) -> tuple[dict[str, int], int]:
    """Levels per mechanism: the cue's level with probability LARGE_FOLLOW_CUE, else uniform."""
    levels, followed = {}, 0
    for m, cue in zip(MECHS, cues):
        if rng.random() < LARGE_FOLLOW_CUE:
            levels[m] = LARGE_CUE_LEVEL[m][cue]
            followed += 1
        else:
            levels[m] = rng.randrange(3)
    return levels, followed


def _large_reply(rng: random.Random, inst: dict, levels: dict[str, int], asked: bool) -> str:
    """A listener reply at the given levels with situation-specific advice for on-topic content;
    advice always when the speaker asked for it, dropped first when the reply runs long."""
    if asked or not any(levels.values()):
        n_advice = rng.choice((1, 1, 2))
    else:
        n_advice = 1 if rng.random() < 0.6 else 0
    for attempt in range(90):  # other fragments first, then less advice, then none
        text, _ = _compose_response(rng, inst, levels, n_advice=(n_advice, min(n_advice, 1), 0)[attempt // 30])
        if len(text.split()) <= LARGE_MAX_REPLY_WORDS:
            return text
    raise ValueError(f"no reply of at most {LARGE_MAX_REPLY_WORDS} words for {inst['event']!r} at {levels}")


def _speaker_turn(rng: random.Random, opener: str, body: list[str], lower_p: float) -> str:
    text = opener + " ".join(t for t in body if t)
    return text.lower() if rng.random() < lower_p else text


def compose_empathetic_dialogues_large(seed: int = SEED) -> tuple[dict[str, list[list[str]]], dict]:
    """Conversations built on the EPITOME situations; each listener reply's levels depend partly on
    cues in the speaker's turn. Held-out splits use (situation, slot fill, cues) keys that the
    training split never uses, so no validation or test context is a training context."""
    rng = random.Random(f"{seed}-{LARGE_SEED_OFFSET}")
    n_held = {s: n for s, n in LARGE_SPLIT_CONVS.items() if s != "train"}
    all_cues = [(a, b, c) for a in LARGE_CUE_LEVEL["er"] for b in LARGE_CUE_LEVEL["ip"] for c in LARGE_CUE_LEVEL["ex"]]
    sizes = [len(_fill_options(sit["slots"])) * len(all_cues) for sit in SITUATIONS]
    # Held-out keys per situation: the same quota for all, but never more than half of a situation's keys,
    # so situations with few slot fills keep training keys.
    quota = 0
    while sum(min(n // 2, quota) for n in sizes) < sum(n_held.values()):
        if quota > max(sizes):
            raise ValueError(f"not enough (situation, fill, cues) keys for {sum(n_held.values())} held-out conversations")
        quota += 1
    held: list[tuple] = []
    train_keys: list[list[tuple]] = []
    for k, sit in enumerate(SITUATIONS):
        keys = [(k, combo, cues) for combo in _fill_options(sit["slots"]) for cues in all_cues]
        rng.shuffle(keys)
        n = min(len(keys) // 2, quota)
        held += keys[:n]
        train_keys.append(keys[n:])
    rng.shuffle(held)
    plan: dict[str, list[tuple]] = {}
    start = 0
    for split, n in n_held.items():
        plan[split], start = held[start:start + n], start + n
    order = list(range(len(SITUATIONS)))
    rng.shuffle(order)
    plan["train"] = []
    for i in range(LARGE_SPLIT_CONVS["train"]):  # cycle the situations; cues drawn by their weights
        k = order[i % len(order)]
        cues = _draw_cues(rng)
        options = [key for key in train_keys[k] if key[2] == cues] or train_keys[k]
        plan["train"].append(rng.choice(options))
    rows: dict[str, list[list[str]]] = {s: [] for s in ED_SPLIT_FILES}
    true_levels: dict[str, list[list[str]]] = {s: [] for s in ED_SPLIT_FILES}  # the sidecar rows, per split
    level_counts = {m: [0, 0, 0] for m in MECHS}
    followed = total = 0
    hit = 0
    # per split and mechanism: replies whose level is the one their latest cue asks for (what the best
    # policy, which always answers the cue, agrees with), out of all replies
    cue_match = {s: {m: [0, 0] for m in (*MECHS, "all")} for s in ED_SPLIT_FILES}
    for split in ED_SPLIT_FILES:
        for k, combo, cues in plan[split]:
            sit = SITUATIONS[k]
            valence, values = sit["valence"], _fill_values(sit["slots"], combo)
            feel = rng.choice(sit["feels"])
            inst = {"sit": sit, "event": sit["event"].format(**values), "feel": feel}
            post = _fill(sit["post"], values)
            prompt = re.split(r"(?<=[.!?])\s", post)[0]
            emotion = FEEL_EMOTION.get(feel, "sad" if valence == "neg" else "proud")
            turns = [_speaker_turn(rng, rng.choice(SPEAKER_OPENERS[valence]),
                                   [post] + _cue_text(rng, cues, valence, feel), 0.1)]
            levels, n_followed = _levels_for(rng, cues)
            turns.append(_large_reply(rng, inst, levels, asked=cues[2] == "advice"))
            all_levels = [levels]
            followed, total = followed + n_followed, total + 3
            if rng.random() < LARGE_FOUR_TURN_SHARE:
                cues2 = _draw_cues(rng)
                mine = _first_person(inst["event"])
                topical = rng.choice(FOLLOWUP_TOPICAL[valence]).format(mine=mine, Mine=_cap(mine)) \
                    if rng.random() < 0.6 else ""
                turns.append(_speaker_turn(rng, rng.choice(FOLLOWUP_OPENERS[valence]) + " ",
                                           [topical] + _cue_text(rng, cues2, valence, feel), 0.1).strip())
                levels2, n_followed = _levels_for(rng, cues2)
                turns.append(_large_reply(rng, inst, levels2, asked=cues2[2] == "advice"))
                all_levels.append(levels2)
                followed, total = followed + n_followed, total + 3
            for lv, cs in zip(all_levels, (cues, cues2) if len(all_levels) > 1 else (cues,)):
                for m, cue in zip(MECHS, cs):
                    level_counts[m][lv[m]] += 1
                    cue_match[split][m][0] += lv[m] == LARGE_CUE_LEVEL[m][cue]
                    cue_match[split][m][1] += 1
                cue_match[split]["all"][0] += all(lv[m] == LARGE_CUE_LEVEL[m][c] for m, c in zip(MECHS, cs))
                cue_match[split]["all"][1] += 1
            conv_id = f"hit:{hit}_conv:{2 * hit + rng.randint(0, 1)}"
            hit += 1
            speaker_ids = rng.sample(range(1, 900), 2)
            for idx, text in enumerate(turns, start=1):
                rows[split].append([conv_id, str(idx), emotion, _ed_field(prompt), str(speaker_ids[(idx - 1) % 2]),
                                    _ed_field(text), "", ""])
            for idx, lv in zip((2, 4), all_levels):  # listener turns are the even utterances
                true_levels[split].append([conv_id, str(idx)] + [str(lv[m]) for m in MECHS])
    summary = {s: {"conversations": len({r[0] for r in rs}), "utterances": len(rs),
                   "listener_turns": sum(int(r[1]) % 2 == 0 for r in rs),
                   "emotions": len({r[2] for r in rs})} for s, rs in rows.items()}
    summary["levels"] = level_counts
    summary["followed_cue"] = round(followed / total, 3)
    summary["cue_match"] = {s: {MECH_NAMES.get(m, m): round(hits / n, 3) for m, (hits, n) in per.items()}
                            for s, per in cue_match.items()}
    return rows, true_levels, summary


LEVELS_HEADER = "conv_id,utterance_idx," + ",".join(MECH_NAMES[m] for m in MECHS)


def ed_large_files(rows: dict[str, list[list[str]]], true_levels: dict[str, list[list[str]]]) -> dict[str, bytes]:
    """The ED CSVs (official format, untouched) and, beside each, ``<split>_levels.csv``: the levels the
    composer chose for every listener reply, which the ED reader never opens (it reads the three CSVs)."""
    files = {k.replace("empathetic_dialogues/", "empathetic_dialogues_large/", 1): v for k, v in ed_files(rows).items()}
    for split, name in ED_SPLIT_FILES.items():
        lines = [LEVELS_HEADER] + [",".join(r) for r in true_levels[split]]
        files[f"empathetic_dialogues_large/{name[:-4]}_levels.csv"] = ("\n".join(lines) + "\n").encode("utf-8")
    files["empathetic_dialogues_large/judge_phrases.json"] = judge_phrases()
    return files


# -- the oracle judge's phrase patterns ---------------------------------------------------------------------

# Slots that stand for a whole sentence (a shared experience) may hold sentence punctuation; the others
# (event, feeling) never do, which keeps a pattern inside one fragment.
_SENTENCE_SLOTS = {"mine"}
_SLOT = re.compile(r"\{(\w+)\}")


def fragment_pattern(template: str) -> str:
    """A case-insensitive regular expression that finds ``template`` in a reply as the composer writes it:
    any slot value (an event is also written "all this" after its first mention), lower case, and the
    final full stop dropped. A slot at either end is left out: the fixed words identify the fragment."""
    parts = _SLOT.split(template)  # literal, slot, literal, slot, ..., literal
    literals, slots = parts[0::2], parts[1::2]
    if not literals[0].strip():
        literals, slots = literals[1:], slots[1:]
    if literals and not literals[-1].strip():
        literals, slots = literals[:-1], slots[:-1]
    out = []
    for i, literal in enumerate(literals):
        literal = literal.strip() if len(literals) == 1 else literal.lstrip() if i == 0 else \
            literal.rstrip() if i == len(literals) - 1 else literal
        out.append(r"\s+".join(re.escape(w) for w in literal.split(" ")) if literal.strip() else r"\s*")
        if i < len(slots):
            out.append(r".+?" if slots[i] in _SENTENCE_SLOTS else r"[^.!?]+?")
    pattern = "".join(out).replace(r"\s+\s+", r"\s+")
    if pattern.endswith(r"\."):
        pattern = pattern[:-2] + r"\.?"
    head = r"(?<!\w)" if re.match(r"\w", literals[0].strip()) else ""
    tail = r"(?!\w)" if re.search(r"\w\W?$", literals[-1].strip()) else ""
    return head + pattern + tail


def judge_phrases() -> bytes:
    """The ER/IP/EX fragments of both valences as patterns, by mechanism and level, for emprl.evaluate.judges
    (the phrase banks live in tools/, which is not installed)."""
    import json

    banks = {"er": ER_BANK, "ip": IP_BANK, "ex": EX_BANK}
    patterns = {MECH_NAMES[m]: {str(level): sorted({fragment_pattern(t) for valence in sorted(banks[m])
                                                    for t in banks[m][valence].get(level, [])})
                                for level in (1, 2)} for m in MECHS}
    data = {"format": "emprl-phrasebank-1",
            "about": "Patterns of the empathy fragments tools/compose_demo.py composes replies from (Python re, "
                     "case-insensitive, on a reply whose whitespace is collapsed). A reply's level for a mechanism "
                     "is the highest level with a matching pattern, else 0.",
            "mechanisms": [MECH_NAMES[m] for m in MECHS], "patterns": patterns}
    return (json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


# -- DailyDialog and PEC ---------------------------------------------------------------------------------


def _dd_tokenize(turn: str) -> str:
    """DailyDialog writes punctuation as separate tokens: 'Thanks , see you .'"""
    return re.sub(r"\s*([.,?!;:])(?=\s|$)", r" \1", turn.strip())


def dailydialog_files() -> dict[str, bytes]:
    files = {}
    for split, dialogues in DAILYDIALOG.items():
        # Each turn is followed by " __eou__"; lines end with the marker, as in the release.
        lines = [" ".join(_dd_tokenize(t) + " __eou__" for t in d.split(" | ")) for d in dialogues]
        files[f"dailydialog/{split}/dialogues_{split}.txt"] = ("\n".join(lines) + "\n").encode("utf-8")
    return files


def pec_files() -> dict[str, bytes]:
    files = {}
    sep = "*" * 20
    for domain, splits in PEC.items():
        speakers = set()
        for split, conversations in splits.items():
            lines = []
            for conv in conversations:
                lines.extend(f"{who}---+---{text}" for who, text in conv)
                lines.append(sep)
                speakers.update(who for who, _ in conv)
            files[f"pec/{domain}/{split}.txt"] = ("\n".join(lines) + "\n").encode("utf-8")
        persona = []
        for who in sorted(speakers):
            persona.extend([who, *PEC_PERSONAS[who], sep])
        files[f"pec/{domain}/persona.txt"] = ("\n".join(persona) + "\n").encode("utf-8")
    return files



def data_card(ep_summary: dict, ed_summary: dict, edl_summary: dict) -> bytes:
    names = {"er": "emotional reactions", "ip": "interpretations", "ex": "explorations"}
    ep_table = "\n".join(f"| {names[m]} | {c[0]} | {c[1]} | {c[2]} |" for m, c in ep_summary["levels"].items())
    ed_rows = []
    for split in ED_SPLIT_FILES:
        s = ed_summary[split]
        ed_rows.append(f"| {split} | {s['conversations']} | {s['utterances']} | {s['listener_turns']} | "
                       f"{s['emotions']} |")
    style_names = {"w": "warm", "u": "understanding", "q": "question", "n": "plain"}
    ed_styles = ", ".join(f"{style_names[k]} {v}" for k, v in ed_summary["styles"].items())
    dd_counts = "/".join(str(len(DAILYDIALOG[s])) for s in ("train", "validation", "test"))
    pec_counts = ", ".join(f"{d} " + "/".join(str(len(PEC[d][s])) for s in ("train", "valid", "test"))
                           for d in PEC)
    edl_table = "\n".join(
        f"| {split} | {edl_summary[split]['conversations']} | {edl_summary[split]['utterances']} | "
        f"{edl_summary[split]['listener_turns']} | {edl_summary[split]['emotions']} |" for split in ED_SPLIT_FILES)
    edl_levels = "; ".join(f"{names[m]} {'/'.join(map(str, c))}" for m, c in edl_summary["levels"].items())
    text = DATA_CARD.format(
        edl_convs=sum(edl_summary[s]["conversations"] for s in ED_SPLIT_FILES), edl_table=edl_table,
        edl_levels=edl_levels, four_pct=round(100 * LARGE_FOUR_TURN_SHARE), max_words=LARGE_MAX_REPLY_WORDS,
        follow_pct=round(100 * LARGE_FOLLOW_CUE), match_pct=round(100 * (LARGE_FOLLOW_CUE + (1 - LARGE_FOLLOW_CUE) / 3)),
        followed=edl_summary["followed_cue"],
        cue_match_test=", ".join(f"{names[m]} {edl_summary['cue_match']['test'][MECH_NAMES[m]]}" for m in MECHS)
        + f", all three {edl_summary['cue_match']['test']['all']}",
        seed=SEED, ep_pairs=ep_summary["pairs"], ep_hand=ep_summary["hand"], ep_composed=ep_summary["composed"],
        ep_seekers=ep_summary["seeker_posts"], n_sit=len(SITUATIONS), ep_table=ep_table,
        ed_convs=sum(ed_summary[s]["conversations"] for s in ED_SPLIT_FILES), n_scripts=len(ED_SCRIPTS),
        n_emotions=("all 32 emotions" if len(ed_summary["all_emotions"]) == 32
                    else f"{len(ed_summary['all_emotions'])} of the 32 emotions"), ed_table="\n".join(ed_rows), ed_styles=ed_styles,
        dd_counts=dd_counts, pec_counts=pec_counts)
    return text.encode("utf-8")


def build_all(seed: int = SEED) -> tuple[dict[str, bytes], dict]:
    """Every demo file as relative path -> bytes, and the counts printed by ``main``."""
    ep_rows, ep_summary = compose_epitome(seed)
    ed_rows, ed_summary = compose_empathetic_dialogues(seed)
    edl_rows, edl_levels, edl_summary = compose_empathetic_dialogues_large(seed)
    files = {}
    files.update(epitome_files(ep_rows))
    files.update(ed_files(ed_rows))
    files.update(ed_large_files(edl_rows, edl_levels))
    files.update(dailydialog_files())
    files.update(pec_files())
    files["DATA_CARD.md"] = data_card(ep_summary, ed_summary, edl_summary)
    return files, {"epitome": ep_summary, "empathetic_dialogues": ed_summary,
                   "empathetic_dialogues_large": edl_summary}


def write_files(files: dict[str, bytes], out: Path) -> None:
    """Write each file atomically (temporary file in the same folder, then os.replace)."""
    for rel in sorted(files):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(files[rel])
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _print_levels(levels: dict) -> None:
    for m, counts in levels.items():
        print(f"  {MECH_NAMES[m]:<20} no {counts[0]:>4}  weak {counts[1]:>4}  strong {counts[2]:>4}")


def _print_ed_splits(title: str, ed: dict) -> None:
    print(f"{title}:")
    for split in ED_SPLIT_FILES:
        s = ed[split]
        print(f"  {split:<6} {s['conversations']:>4} conversations {s['utterances']:>5} utterances "
              f"{s['listener_turns']:>4} listener turns {s['emotions']:>3} emotions")


def _print_summary(summary: dict, n_files: int, out: Path) -> None:
    ep = summary["epitome"]
    print(f"wrote {n_files} files under {out}")
    print(f"EPITOME: {ep['pairs']} pairs ({ep['hand']} hand-written, {ep['composed']} composed), "
          f"{ep['seeker_posts']} seeker posts")
    _print_levels(ep["levels"])
    ed = summary["empathetic_dialogues"]
    _print_ed_splits("EmpatheticDialogues", ed)
    print(f"  listener styles: {ed['styles']}")
    edl = summary["empathetic_dialogues_large"]
    _print_ed_splits("EmpatheticDialogues (large)", edl)
    _print_levels(edl["levels"])
    print(f"  levels that followed the cue: {edl['followed_cue']}")
    for split, per in edl["cue_match"].items():
        print(f"  {split:<6} true level = the latest cue's level: " + ", ".join(f"{m} {v}" for m, v in per.items()))
    print(f"DailyDialog: {', '.join(f'{s} {len(d)}' for s, d in DAILYDIALOG.items())} dialogues")
    print("PEC: " + ", ".join(f"{d}/{s} {len(c)}" for d, sp in PEC.items() for s, c in sp.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python tools/compose_demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEMO_DATA_DIR), help="output folder (default: the packaged demo_data)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    files, summary = build_all()
    write_files(files, out)
    _print_summary(summary, len(files), out)


if __name__ == "__main__":
    main()
