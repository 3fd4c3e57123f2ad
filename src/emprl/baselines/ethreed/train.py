"""Stage 5 (ETHREED baseline), step 2 — train ETHREED, score it on the test split and write one
sampled generation run per seed.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.baselines.ethreed.train RECIPE.yaml

The recipe keys are in config.py.

Reads like the paper's section 3, top to bottom:
  data       dialogues with the speaker's emotion (ED) and, from `python -m emprl.emotion_classifier`,
             one emotion per listener turn (the labels of L1 and of the GPS target);
  model      word vocabulary (GloVe when given) -> ETHREED (model.py; docs/ethreed.md maps the paper's
             equations to the code and lists the options that depart from it);
  training   L = L1 + L2 + L3 + L4 with teacher forcing; Adam, batch 8, lr 5e-4 x0.3 every 3 epochs;
             the epoch with the lowest validation PPL is kept;
  evaluation test PPL (per token over the whole split) and speaker-emotion accuracy;
  decoding   one run per seed over the test split (top-k 20, temperature 0.9 like the other systems of
             the shared evaluation; greedy with do_sample: false), at most 40 tokens; the policy's
             R^_e is a seeded draw from its Gaussian (policy_inference: mean decodes with the mean).
Output folder (written whole, stage.json last): model.safetensors, config.json, vocab.json,
train_config.json, metrics.json, generations/seed<k>.jsonl (+ generations/metrics.json), README.md.
"""

from __future__ import annotations

import json
import os

import torch

from emprl.baselines.ethreed.batching import IGNORE, encode_example
from emprl.baselines.ethreed.config import EthreedTrainConfig
from emprl.baselines.ethreed.loop import evaluate_loss, fit, generate_runs, make_loader
from emprl.baselines.ethreed.model import ETHREED, ETHREEDConfig
from emprl.baselines.ethreed.vocab import Vocab, load_glove
from emprl.common.errors import UserError, run_cli
from emprl.common.io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    write_model_card,
    write_stage_stamp,
)
from emprl.pipeline.config import config_to_dict, parse_recipe, recipe_hash
from emprl.pipeline.lifecycle import begin_stage

GENERATIONS_DIR = "generations"


# ----- data: dialogues and listener emotions ------------------------------------------------------

def read_listener_emotions(path: str) -> dict[str, list[str]]:
    """conv_id -> one emotion label per utterance of the conversation (oldest first)."""
    table: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                conv, labels = str(row["conv_id"]), row["emotions"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{lineno}: expected a JSON object with conv_id and emotions ({e})") from e
            if not isinstance(labels, list):
                raise UserError(f"{path}:{lineno}: emotions must be a list of labels")
            table[conv] = [str(x or "") for x in labels]
    return table


def attach_listener_emotions(examples: list[dict], table: dict[str, list[str]], source: str) -> list[dict]:
    """Adds listener_emotions (listener turns of the context, then the response) to each example whose
    conversation is in the table. Assumes the context starts at the conversation's first utterance."""
    out = []
    for ex in examples:
        labels = table.get(str(ex.get("conv_id", "")))
        if labels is not None:
            n = len(ex["context"])
            if len(labels) < n + 1:
                raise UserError(f"{source}: conv_id {ex['conv_id']!r} has {len(labels)} labels; "
                                f"an example needs {n + 1} (context turns + response)")
            listener = [labels[i] for i in range(n) if (n - 1 - i) % 2 == 1] + [labels[n]]
            ex = {**ex, "listener_emotions": listener}
        out.append(ex)
    return out


def load_splits(cfg: EthreedTrainConfig) -> dict[str, list[dict]]:
    from emprl.data import load_dialogues

    dd = load_dialogues(cfg.data)
    table = read_listener_emotions(cfg.listener_emotions) if cfg.listener_emotions else None
    splits = {}
    for name in ("train", "validation", "test"):
        if name not in dd:
            raise UserError(f"{cfg.data}: split {name!r} missing")
        rows = dd[name].to_list()
        splits[name] = attach_listener_emotions(rows, table, cfg.listener_emotions) if table else rows
    return splits


# ----- model --------------------------------------------------------------------------------------

def model_config(cfg: EthreedTrainConfig, vocab_size: int) -> ETHREEDConfig:
    return ETHREEDConfig(
        vocab_size=vocab_size, embedding_dim=cfg.embedding_dim, hidden_size=cfg.hidden_size,
        dropout=cfg.dropout, tie_embeddings=cfg.tie_embeddings, coverage_weight=cfg.coverage_weight,
        use_party_gru=cfg.use_party_gru, use_emotion_gru=cfg.use_emotion_gru,
        use_emotion_tracking=cfg.use_emotion_tracking, use_policy=cfg.use_policy, use_gps_loss=cfg.use_gps_loss,
        gps_divergence=cfg.gps_divergence, decoder_input_context=cfg.decoder_input_context, copy_from=cfg.copy_from)


# ----- stage --------------------------------------------------------------------------------------

def run(cfg: EthreedTrainConfig, splits: dict[str, list[dict]] | None = None, progress: bool = True,
        stage=None) -> dict:
    """Build the vocabulary, train, evaluate on test, generate, and write cfg.output_dir (see the module
    docstring); the stage stamp goes in last."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    # a batch without emotion labels leaves the classifier out of the loss; DDP must tolerate that
    # cpu=True makes several CPU ranks (MULTI_GPU + use_cpu launch config) join one gloo group
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if cfg.num_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    splits = load_splits(cfg) if splits is None else splits
    if cfg.max_train_examples is not None:
        splits["train"] = splits["train"][: cfg.max_train_examples]
    if cfg.max_eval_examples is not None:
        splits = {k: (v if k == "train" else v[: cfg.max_eval_examples]) for k, v in splits.items()}
    if not splits["train"]:
        raise UserError(f"{cfg.data}: the train split is empty")

    # data -> model
    vocab = Vocab.build((t for ex in splits["train"] for t in [*ex["context"], ex["response"]]),
                        min_freq=cfg.min_freq, max_size=cfg.vocab_size)
    enc = {name: [encode_example(ex, vocab, cfg.max_turns, cfg.max_turn_len, cfg.max_target_len,
                                 where=f"{cfg.data} [{name} row {i}]") for i, ex in enumerate(rows)]
           for name, rows in splits.items()}
    model = ETHREED(model_config(cfg, len(vocab)))
    if cfg.glove:
        weight, found = load_glove(cfg.glove, vocab, cfg.embedding_dim)
        with torch.no_grad():
            model.embedding.weight.copy_(weight)
        accelerator.print(f"GloVe: {found}/{len(vocab)} vocabulary words initialised")
    listener = sum(1 for ex in enc["train"] if ex["response_emotion"] != IGNORE)
    accelerator.print(f"ETHREED: {model.num_parameters():,} parameters, vocabulary {len(vocab):,}, "
                      f"{len(enc['train'])} training examples ({listener} with listener emotions), "
                      f"{accelerator.num_processes} process(es)")

    # training
    train_loader = make_loader(enc["train"], cfg.batch_size, shuffle=True, seed=cfg.seed, pad_id=vocab.pad_id)
    val_loader = make_loader(enc["validation"], cfg.eval_batch_size, pad_id=vocab.pad_id)
    log = fit(model, train_loader, val_loader, epochs=cfg.epochs, lr=cfg.lr, lr_decay=cfg.lr_decay,
              lr_decay_epochs=cfg.lr_decay_epochs, grad_clip=cfg.grad_clip, accelerator=accelerator,
              progress=progress)
    model = accelerator.unwrap_model(model)

    # evaluation
    test = evaluate_loss(model, make_loader(enc["test"], cfg.eval_batch_size, pad_id=vocab.pad_id))
    best = min(log, key=lambda r: r["val_ppl"]) if log else {}
    metrics = {"ppl": test["ppl"], "emotion_accuracy": test["emotion_accuracy"],
               "num_parameters": model.num_parameters(), "tokens": test["tokens"],
               "emotion_examples": test["emotion_total"], "vocab_size": len(vocab),
               "best_epoch": best.get("epoch"), "validation_ppl": best.get("val_ppl"), "epochs": log,
               "seeds": list(cfg.seeds),
               "decoding": {"do_sample": cfg.do_sample, "top_k": cfg.top_k, "temperature": cfg.temperature,
                            "max_len": cfg.max_decode_len, "policy_inference": cfg.policy_inference},
               "generations": {str(s): f"{GENERATIONS_DIR}/seed{s}.jsonl" for s in cfg.seeds},
               "recipe_hash": recipe_hash(cfg)}

    # decoding and writing (one process)
    if accelerator.is_main_process:
        runs = generate_runs(model, enc["test"], splits["test"], vocab, cfg, progress)
        write_outputs(cfg, model, vocab, runs, metrics, stage)
    accelerator.wait_for_everyone()
    return metrics


def write_outputs(cfg: EthreedTrainConfig, model: ETHREED, vocab: Vocab, runs: dict[int, list[dict]],
                  metrics: dict, stage=None) -> None:
    """The output folder, whole or not at all; the stage stamp goes in last."""
    with atomic_dir(cfg.output_dir) as tmp:
        model.save_pretrained(tmp)
        vocab.save(os.path.join(tmp, "vocab.json"))
        atomic_write_json(os.path.join(tmp, "train_config.json"), config_to_dict(cfg))
        for seed, rows in runs.items():
            atomic_write_jsonl(os.path.join(tmp, GENERATIONS_DIR, f"seed{seed}.jsonl"), rows)
        # beside the runs, so a reader given generations/seed{seed}.jsonl finds the PPL next to them
        atomic_write_json(os.path.join(tmp, GENERATIONS_DIR, "metrics.json"),
                          {k: metrics[k] for k in ("ppl", "emotion_accuracy", "num_parameters", "decoding")})
        atomic_write_json(os.path.join(tmp, "metrics.json"), metrics)
        write_model_card(tmp, "ETHREED baseline", "Emotion-tracking hierarchical recurrent encoder-decoder "
                         "with a stochastic empathetic policy (Li et al.), trained from scratch.",
                         config_to_dict(cfg), {k: metrics[k] for k in (
                             "num_parameters", "vocab_size", "ppl", "emotion_accuracy", "best_epoch")},
                         extra=_card_extra(cfg))
        stage.stamp(tmp) if stage else write_stage_stamp(tmp, "ethreed", cfg)  # last: marks it complete


def _card_extra(cfg: EthreedTrainConfig) -> str:
    decoding = (f"sampling, top-k {cfg.top_k}, temperature {cfg.temperature}" if cfg.do_sample else "greedy")
    decoding += f"; policy R^_e: {'a seeded Gaussian draw' if cfg.policy_inference == 'sample' else 'its mean'}"
    return (
        "## Files\n\n"
        "- `model.safetensors`, `config.json`, `vocab.json`: `ETHREED.from_pretrained(folder)` and "
        "`Vocab.load(folder/vocab.json)`; `train_config.json`: the recipe values.\n"
        "- `metrics.json`: test `ppl` (exp of the per-token NLL summed over the whole test split, teacher "
        "forcing), `emotion_accuracy` (speaker emotion from the last speaker emotion state), `num_parameters` "
        "(a tied matrix counted once), the per-epoch log and the kept epoch (lowest validation PPL).\n"
        f"- `{GENERATIONS_DIR}/seed<k>.jsonl`, seeds {list(cfg.seeds)}: one response per test example and "
        f"seed ({decoding}, at most {cfg.max_decode_len} tokens), rows `{{conv_id, context, reference, "
        "response}}` with the full context. The shared evaluation reads them as an external system "
        f"(`jsonl:{cfg.output_dir}/{GENERATIONS_DIR}/seed{{seed}}.jsonl`); `{GENERATIONS_DIR}/metrics.json` "
        "repeats the PPL beside them. (The single greedy `generations_test.jsonl` of earlier versions is "
        "gone: set `do_sample: false` and `policy_inference: mean` for one deterministic run.)\n\n"
        "Responses are lowercased word tokens joined by spaces (the model's vocabulary); out-of-vocabulary "
        "words are never generated.")


def main(argv: list[str] | None = None) -> None:
    (cfg,) = parse_recipe((EthreedTrainConfig,), argv)
    stage = begin_stage("ethreed", cfg.output_dir, (cfg,), overwrite=cfg.overwrite_output_dir,
                        inputs=[cfg.data, cfg.listener_emotions, cfg.glove])
    if stage is not None:
        run(cfg, stage=stage)
        stage.release()


if __name__ == "__main__":
    run_cli(main)
