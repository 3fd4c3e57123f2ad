"""A small world for the app's tests: tiny policies with stage stamps, tiny identifiers, a blind sheet
exported by ``human_eval export`` (no network; everything built from configs)."""

from __future__ import annotations

import json
import os

import tiny

ANSWERS = {  # item index -> answer: ratings (empathy, relevance, fluency) or an A/B choice
    0: ("4", "3", "5"), 1: ("2", "2", "3"), 2: ("5", "4", "4"),
}


def stamp(folder, stage: str) -> None:
    with open(os.path.join(folder, "stage.json"), "w", encoding="utf-8") as fh:
        json.dump({"stage": stage, "complete": True}, fh)


def make_policies(root) -> dict[str, str]:
    """t5_sft, t5_ppo (tiny T5s) and llama_sft (a tiny Llama), each stamped by its stage."""
    out = {}
    for name, maker, seed, stage in (("t5_sft", tiny.make_tiny_t5, 0, "sft"), ("t5_ppo", tiny.make_tiny_t5, 1, "ppo"),
                                     ("llama_sft", tiny.make_tiny_llama, 2, "sft")):
        folder = os.path.join(str(root), name)
        maker(folder, seed=seed)
        stamp(folder, stage)
        out[name] = folder
    return out


def make_ethreed(root) -> str:
    """A tiny ETHREED baseline folder (model, vocabulary, stamp) as its stage writes it."""
    import torch

    from emprl.baselines.ethreed.model import ETHREED, ETHREEDConfig
    from emprl.baselines.ethreed.vocab import Vocab

    folder = os.path.join(str(root), "ethreed")
    vocab = Vocab.build([" ".join(tiny.WORDS)])
    torch.manual_seed(0)
    ETHREED(ETHREEDConfig(vocab_size=len(vocab), embedding_dim=8, hidden_size=8, dropout=0.0)).save_pretrained(folder)
    vocab.save(os.path.join(folder, "vocab.json"))
    stamp(folder, "ethreed")
    return folder


def make_identifiers(root) -> str:
    import torch

    from emprl.common.mechanisms import MECHANISMS
    from reward_models import EmpathyIdentifier

    bert = os.path.join(str(root), "bert")
    tiny.make_tiny_bert(bert)
    folder = os.path.join(str(root), "identifiers")
    for i, mech in enumerate(MECHANISMS):
        torch.manual_seed(i)
        EmpathyIdentifier.from_encoders(bert, head="linear", dropout=0.0).save_pretrained(os.path.join(folder, mech))
    stamp(folder, "identifiers")
    return folder


def make_sheet(root, n: int = 4) -> str:
    """An export of three systems' generations on n contexts: 3n rating items, 2n A/B items."""
    from emprl.human_eval.run import main as human_eval

    gens = []
    for s, name in enumerate(("EmpRL", "T5", "MoEL")):
        path = os.path.join(str(root), f"gen_{name}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            for i in range(n + 2):
                fh.write(json.dumps({"context": [f"i lost my job today {i}", "oh no", "i feel sad"],
                                     "reference": f"ref {i}", "response": f"reply {i} of system {s}"}) + "\n")
        gens.append(f"{name}={path}")
    out = os.path.join(str(root), "kit")
    human_eval(["export", "--generations", *gens, "--n", str(n), "--seed", "1", "--out", out])
    return out


def make_world(root) -> dict:
    world = {"root": str(root), **make_policies(root), "identifiers": make_identifiers(root),
             "ethreed": make_ethreed(root)}
    world["sheet"] = make_sheet(root)
    return world
