"""ETHREED's loops: training (L = L1 + L2 + L3 + L4 with teacher forcing, the epoch with the lowest
validation PPL kept), evaluation (PPL, emotion accuracy) and decoding (one sampled run per seed).
The stage that drives them is ``train.py``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emprl.baselines.ethreed.batching import IGNORE, collate
from emprl.baselines.ethreed.model import ETHREED
from emprl.baselines.ethreed.vocab import Vocab
from emprl.metrics import perplexity

if TYPE_CHECKING:
    from emprl.baselines.ethreed.config import EthreedTrainConfig

LOSS_KEYS = ("loss", "emotion_loss", "gps_loss", "nll_loss", "coverage_loss")


# ----- training: L1 + L2 + L3 + L4 with teacher forcing ------------------------------------------

def make_loader(items: Sequence[dict], batch_size: int = 8, shuffle: bool = False, seed: int = 0,
                pad_id: int = 0) -> DataLoader:
    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(list(items), batch_size=batch_size, shuffle=shuffle, generator=gen,
                      collate_fn=lambda rows: collate(rows, pad_id))


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_epoch(model: torch.nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer, *,
                accelerator=None, grad_clip: float = 5.0, desc: str = "train", progress: bool = True
                ) -> dict[str, float]:
    """One epoch of teacher-forced training on L1 + L2 + L3 + L4; returns the mean of each loss."""
    model.train()
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    n = 0
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    bar = tqdm(loader, desc=desc, disable=not show, leave=False)
    for batch in bar:
        if accelerator is None:
            batch = _to(batch, _device(model))
        out = model(batch)
        optimizer.zero_grad(set_to_none=True)
        if accelerator is None:
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        else:
            accelerator.backward(out["loss"])
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        for k in LOSS_KEYS:
            sums[k] += float(out[k].detach())
        n += 1
        bar.set_postfix(loss=f"{sums['loss'] / n:.3f}")
    return {k: v / max(n, 1) for k, v in sums.items()}


def fit(model: ETHREED, train_loader, val_loader, *, epochs: int, lr: float = 5e-4, lr_decay: float = 0.3,
        lr_decay_epochs: int = 3, grad_clip: float = 5.0, accelerator=None, progress: bool = True
        ) -> list[dict]:
    """Adam + StepLR; keeps the weights of the epoch with the lowest validation PPL. Returns a log row
    per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=lr_decay_epochs, gamma=lr_decay)
    if accelerator is not None:
        model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    best, best_state, log = float("inf"), None, []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update({f"train_{k}": v for k, v in train_epoch(
            model, train_loader, optimizer, accelerator=accelerator, grad_clip=grad_clip,
            desc=f"epoch {epoch}/{epochs}", progress=progress).items()})
        val = evaluate_loss(model, val_loader, accelerator=accelerator)
        row.update({"val_ppl": val["ppl"], "val_emotion_accuracy": val["emotion_accuracy"]})
        scheduler.step()
        if val["ppl"] < best:
            best = val["ppl"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        log.append(row)
        if progress and (accelerator is None or accelerator.is_local_main_process):
            tqdm.write(json.dumps(row))
    if best_state is not None:
        model.load_state_dict(best_state)
    return log


# ----- evaluation: PPL and emotion accuracy -------------------------------------------------------

@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, loader: Iterable[dict], *, accelerator=None, progress: bool = False,
                  desc: str = "eval") -> dict[str, float]:
    """Teacher-forced NLL summed over all reference tokens (PPL = exp(nll_sum / tokens), over the whole
    set, not a mean of batch means) and speaker-emotion accuracy from the last speaker emotion state."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # nll_sum, tokens, emotion_correct, emotion_total
    show = progress and (accelerator is None or accelerator.is_local_main_process)
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
        if accelerator is None:
            batch = _to(batch, _device(model))
        out = model(batch)
        part = torch.zeros(4, dtype=torch.float64)
        part[0], part[1] = float(out["nll_sum"]), float(out["n_tokens"])
        if out["emotion_logits"] is not None:
            labelled = batch["emotion"] != IGNORE
            pred = out["emotion_logits"].argmax(-1)
            part[2] = float((pred == batch["emotion"])[labelled].sum())
            part[3] = float(labelled.sum())
        totals += part
    if accelerator is not None and accelerator.num_processes > 1:
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum").cpu()
    nll, tokens, correct, total = totals.tolist()
    return {"nll_sum": nll, "tokens": tokens, "ppl": perplexity(nll, tokens) if tokens else float("nan"),
            "emotion_correct": correct, "emotion_total": total,
            "emotion_accuracy": correct / total if total else float("nan")}


# ----- decoding -----------------------------------------------------------------------------------

@torch.no_grad()
def generate_responses(model: ETHREED, items: Sequence[dict], vocab: Vocab, *, batch_size: int = 32,
                       max_len: int = 40, do_sample: bool = False, top_k: int = 0, temperature: float = 1.0,
                       seed: int | None = None, sample_policy: bool = True, progress: bool = True) -> list[str]:
    """Decoded response text per encoded example, in order. With a seed, every batch draws from its own
    generator, seeded from one stream per run seed (so runs with neighbouring seeds share no batch)."""
    model.eval()
    device = _device(model)
    texts: list[str] = []
    streams = None if seed is None else torch.Generator().manual_seed(seed)
    loader = make_loader(items, batch_size=batch_size, pad_id=vocab.pad_id)
    for batch in tqdm(loader, desc="generate", disable=not progress, leave=False):
        batch_seed = None if streams is None else int(torch.randint(0, 2**62, (1,), generator=streams))
        ids = model.generate(_to(batch, device), max_len=max_len, do_sample=do_sample, top_k=top_k,
                             temperature=temperature, seed=batch_seed, sample_policy=sample_policy)
        texts.extend(vocab.decode(row) for row in ids)
    return texts


def generate_runs(model: ETHREED, items: Sequence[dict], examples: Sequence[dict], vocab: Vocab,
                  cfg: EthreedTrainConfig, progress: bool = True) -> dict[int, list[dict]]:
    """seed -> one row per test example: {"conv_id", "context" (all turns), "reference", "response"}."""
    runs = {}
    for seed in cfg.seeds:
        responses = generate_responses(model, items, vocab, batch_size=cfg.eval_batch_size,
                                       max_len=cfg.max_decode_len, do_sample=cfg.do_sample, top_k=cfg.top_k,
                                       temperature=cfg.temperature, seed=seed,
                                       sample_policy=cfg.policy_inference == "sample", progress=progress)
        runs[seed] = [{"conv_id": ex.get("conv_id", ""), "context": list(ex["context"]),
                       "reference": ex["response"], "response": resp}
                      for ex, resp in zip(examples, responses)]
    return runs
