"""Stage 3 — PPO (EmpRL paper §III-C): the SFT policy, a value head, the empathy reward, TRL's PPO.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.ppo recipes/demo/ppo.yaml
    python -m emprl.ppo recipes/demo/ppo.yaml --resume true       # continue an interrupted run

Per step: a batch of contexts (seeded order) -> prompts -> sampled responses (top-k 20, top-p 1.0,
temperature 0.9, at most 30 new tokens, no minimum length) -> R_emp against the cached gold levels ->
``PPOTrainer.step`` (per-token reward -beta*KL_t, plus R_emp at the last token; GAE; clipped
surrogate + vf_coef * value loss). Every ``eval_steps`` (and at step 0, i.e. the SFT policy) a fixed
held-out subset is sampled with a fixed seed and scored: mean R_emp, Emp-F1 and KL to the reference.

Outputs in ``output_dir``: the final policy with its value head (``model.safetensors``; LoRA merged,
adapter in ``adapter/``), ``best/`` (best held-out R_emp), ``checkpoint-N/`` (resume state),
``log.jsonl``, ``eval.jsonl``, ``runs/`` (tensorboard), ``training_curves.png``, ``metrics.json``,
``README.md`` and, last, ``stage.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from trl import PPOConfig

from emprl.config import config_to_dict, parse_recipe, recipe_hash
from emprl.data import MECHANISMS, load_dialogues
from emprl.errors import UserError, run_cli
from emprl.io import atomic_write_json, atomic_write_text, write_model_card
from emprl.lifecycle import begin_stage, check_model_folder, newest_intact_checkpoint
from emprl.ppo_trainer import EmpRLPPOTrainer, list_checkpoints, rotate_checkpoints
from reward_models.baseline import apply_baseline

logger = logging.getLogger("emprl.ppo")
STAGE = "ppo"
# TRL 0.11.4 announces the classic PPO API's deprecation on every PPOConfig; it is the API we pin
# (docs/rl-effect.md), and the notice would sit before every one-line error.
warnings.filterwarnings("ignore", message=".*PPOConfig.*deprecated", category=FutureWarning)


@dataclass
class PPOScriptConfig:
    sft_model_path: str = field(metadata={"help": "the SFT stage's output folder (merged weights)",
                                          "existing_path": True})
    labelled_data: str = field(metadata={"help": "the labelling stage's output (save_to_disk folder)",
                                         "existing_path": True})
    identifiers_dir: str | None = field(default=None, metadata={
        "help": "the identifiers stage's output folder", "existing_path": True})
    reward: dict = field(default_factory=lambda: {"empathy": 1.0}, metadata={
        "help": "reward components and weights, e.g. {empathy: 1.0}"})
    output_dir: str = "outputs/ppo"
    # policy
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "default: PEFT's per architecture"})
    bf16: bool = field(default=False, metadata={"help": "LoRA: load the base weights in bf16 (full fine-tuning keeps fp32 "
                                                        "weights; see mixed_precision)"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto | bf16 | no: bf16 autocast where the device computes bf16 natively (CUDA, CPUs with "
                "AVX512-BF16/AMX), fp32 elsewhere; log-probabilities and the PPO ratio stay fp32"})
    fix_first_token: bool = field(default=True, metadata={
        "help": "give y1 of encoder-decoder responses its PPO terms (false = TRL 0.11 behaviour)"})
    # rollouts (the paper's decoding)
    top_k: int = 20
    top_p: float = 1.0
    temperature: float = 0.9
    max_new_tokens: int = 30
    min_new_tokens: int = field(default=0, metadata={
        "help": "rollouts end no earlier than this (the authors: 5); see docs/minimum-length.md"})
    generation_batch_size: int | None = field(default=None, metadata={"help": "default: batch_size"})
    # Reward handling beyond TRL's own keys (use_score_norm, use_score_scaling, whiten_rewards).
    samples_per_context: int = field(default=1, metadata={
        "help": "K responses sampled per training context in a step (batch_size must be a multiple of K)"})
    reward_baseline: str = field(default="none", metadata={
        "help": "none (the paper) | leave_one_out: subtract the mean reward of the other K-1 samples of the "
                "same context before TRL sees it (an opt-in beyond the paper; needs samples_per_context >= 2)"})
    eval_batch_size: int | None = field(default=None, metadata={
        "help": "held-out generation batch (default: generation_batch_size); larger is faster on CPU"})
    # prompt settings: default to what the SFT stage saved with the model (emprl_prompt.json)
    max_source_tokens: int | None = None
    speaker_tag: str | None = None
    listener_tag: str | None = None
    system_prompt: str | None = None
    lr_scheduler_type: str = field(default="constant", metadata={"help": "transformers scheduler name"})
    warmup_steps: int = 0
    # evaluation, checkpoints, safety
    eval_steps: int = 100
    eval_samples: int = 200
    eval_repeats: int = field(default=1, metadata={
        "help": "responses sampled per held-out context: a steadier mean for the SFT-vs-PPO comparison"})
    eval_split: str = "validation"
    eval_seed: int = 1234
    save_steps: int = 100
    save_total_limit: int | None = 2
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start over even if output_dir holds a finished or interrupted run"})
    nan_patience: int = field(default=3, metadata={"help": "consecutive NaN/inf reward steps before stopping"})

    def __post_init__(self):
        from emprl.precision import CHOICES
        from reward_models.baseline import BASELINES

        if self.eval_repeats < 1:
            raise ValueError(f"key 'eval_repeats': expected a positive integer, got {self.eval_repeats}")
        if self.samples_per_context < 1:
            raise ValueError(f"key 'samples_per_context': expected a positive integer, got {self.samples_per_context}")
        if self.reward_baseline not in BASELINES:
            raise ValueError(f"key 'reward_baseline': expected one of {', '.join(BASELINES)}, "
                             f"got {self.reward_baseline!r}")
        if self.reward_baseline == "leave_one_out" and self.samples_per_context < 2:
            raise ValueError("key 'reward_baseline': leave_one_out needs samples_per_context >= 2, "
                             f"got {self.samples_per_context}")
        if self.mixed_precision not in CHOICES:
            raise ValueError(f"key 'mixed_precision': expected one of {', '.join(CHOICES)}, "
                             f"got {self.mixed_precision!r}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"key 'min_new_tokens': expected 0 to max_new_tokens ({self.max_new_tokens}), "
                             f"got {self.min_new_tokens}")


def main(argv=None):
    cfg, ppo_cfg = parse_recipe((PPOScriptConfig, PPOConfig), argv)
    _init_distributed()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.time()
    # Everything is checked before the output folder is touched (docs/lifecycle.md).
    _check_batch_sizes(ppo_cfg, cfg.samples_per_context)
    _load_data(cfg)
    check_model_folder(cfg.sft_model_path, "sft_model_path")
    stage = begin_stage(STAGE, cfg.output_dir, (cfg, ppo_cfg), in_place=True,
                        inputs=[cfg.sft_model_path, cfg.labelled_data, cfg.identifiers_dir],
                        overwrite=cfg.overwrite_output_dir)
    if stage is None:
        return None
    checkpoint = _prepare_output_dir(cfg)

    run = PPORun(cfg, ppo_cfg)                 # policy + value head, reference, reward, data
    step = 0
    if checkpoint:
        step = run.resume(checkpoint)
    else:
        run.evaluate(0)                        # the SFT policy, before any update

    # The PPO loop.
    bar = run.progress(initial=step)
    while step < ppo_cfg.steps:
        step += 1
        row = run.train_step(step)
        bar.update(1)
        bar.set_postfix(reward=f"{row.get('r_emp', row['reward']):.3f}", kl=f"{row.get('kl', 0):.3f}",
                        len=f"{row['response_words']:.1f}")
        if cfg.eval_steps > 0 and step % cfg.eval_steps == 0:
            run.evaluate(step)
        if cfg.save_steps > 0 and step % cfg.save_steps == 0 and not row.get("skipped"):
            run.save_checkpoint(step)           # never a checkpoint right after a NaN step
    bar.close()
    if not run.evaluated_at(step):
        run.evaluate(step)

    run.finish(step, stage, minutes=(time.time() - start) / 60)
    stage.release()
    return run


class PPORun:
    """Everything the loop touches: trainer, reward, data order, logs, evaluation, checkpoints."""

    def __init__(self, cfg: PPOScriptConfig, ppo_cfg: PPOConfig):
        from accelerate import PartialState
        from trl.core import set_seed

        from emprl.policy import prompt_builder_for
        from reward_models.registry import build_reward

        self.cfg, self.ppo_cfg = cfg, ppo_cfg
        state = PartialState()
        self.is_main, self.rank, self.world = state.is_main_process, state.process_index, state.num_processes
        _check_batch_sizes(ppo_cfg, cfg.samples_per_context)
        set_seed(ppo_cfg.seed)  # the value head and LoRA weights are initialised at random

        self.train, self.eval_data = _load_data(cfg)
        model, ref_model, tokenizer, self.is_encoder_decoder, path = load_value_head_policy(cfg)
        self.builder = prompt_builder_for(path, tokenizer, self.is_encoder_decoder,
                                          max_source_tokens=cfg.max_source_tokens, speaker_tag=cfg.speaker_tag,
                                          listener_tag=cfg.listener_tag, system_prompt=cfg.system_prompt)
        tokenizer.padding_side = self.builder.generation_padding_side  # T5: right (docs/padding-sides.md)
        self.stop_ids = _stop_ids(model.pretrained_model, tokenizer, self.builder)

        chosen = getattr(ppo_cfg, "_emprl_recipe", {}).get("values", {})
        if "log_with" not in chosen and ppo_cfg.log_with is None:
            ppo_cfg.log_with = "tensorboard"  # local logs unless the recipe says otherwise (log_with: null)
        if ppo_cfg.log_with == "tensorboard":
            ppo_cfg.project_kwargs = {"logging_dir": os.path.join(cfg.output_dir, "runs"),
                                      **(ppo_cfg.project_kwargs or {})}
        self.precision = _choose_precision(cfg, ppo_cfg)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=ppo_cfg.learning_rate)
        scheduler = _scheduler(cfg, ppo_cfg, optimizer, self.world)
        self.trainer = EmpRLPPOTrainer(config=ppo_cfg, model=model, ref_model=ref_model, tokenizer=tokenizer,
                                       optimizer=optimizer, lr_scheduler=scheduler,
                                       fix_first_token=cfg.fix_first_token, prompt_builder=self.builder)
        set_seed(ppo_cfg.seed + self.rank)  # each rank samples its own responses

        shared = {"identifiers_dir": cfg.identifiers_dir, "device": self.trainer.accelerator.device,
                  "speaker_tag": self.builder.speaker_tag, "listener_tag": self.builder.listener_tag}
        self.reward = build_reward(cfg.reward, **shared)
        self.empathy = _find_empathy_reward(self.reward, cfg, self.trainer.accelerator.device)
        # The paper's decoding, and nothing from the model's saved generation config. No minimum length
        # unless the recipe asks for one: it can push the KL estimate negative (docs/minimum-length.md).
        self.generation_kwargs = dict(
            do_sample=True, top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, repetition_penalty=1.0, no_repeat_ngram_size=0,
            # min_new_tokens overrides a saved min_length; setting both makes transformers warn each call
            **({"min_new_tokens": cfg.min_new_tokens} if cfg.min_new_tokens else {"min_length": 0}),
            pad_token_id=tokenizer.pad_token_id, eos_token_id=self.stop_ids)
        self.generation_batch_size = cfg.generation_batch_size or ppo_cfg.batch_size
        self.eval_rows = [row for row in _eval_subset(len(self.eval_data), cfg.eval_samples, cfg.eval_seed)
                          for _ in range(cfg.eval_repeats)]
        self.nan_streak, self.skipped_steps = 0, 0
        self.best: dict | None = None
        self.last_checkpoint: str | None = None
        self.eval_history: list[dict] = []
        self._perms: dict[int, np.ndarray] = {}

    # -- data order ---------------------------------------------------------------------------------
    def batch_rows(self, step: int) -> list[int]:
        """This rank's rows for ``step`` (1-based): the training set in a seeded order, a fresh
        permutation per epoch; each step takes batch_size / K contexts x processes, each rank its
        shard, and every context appears K times in a row (K = samples_per_context)."""
        k_per = self.cfg.samples_per_context
        size = self.ppo_cfg.batch_size // k_per
        first = (step - 1) * size * self.world + self.rank * size
        rows = []
        for k in range(first, first + size):
            epoch, pos = divmod(k, len(self.train))
            if epoch not in self._perms:
                self._perms = {epoch: np.random.default_rng([self.ppo_cfg.seed, epoch]).permutation(len(self.train))}
            rows.extend([int(self._perms[epoch][pos])] * k_per)
        return rows

    # -- one PPO step ---------------------------------------------------------------------------------
    def rollout(self, batch: dict, batch_size: int | None = None) -> tuple[list, list, list[str], list[str]]:
        """Prompts -> sampled responses (token tensors for TRL, cleaned texts for the reward), and the
        contexts as the identifiers read them (serialised exactly as the labelling step did)."""
        from emprl.data import serialize_context
        from emprl.policy import clean_response, prompt_ids

        queries = [torch.tensor(prompt_ids(self.builder, turns), dtype=torch.long) for turns in batch["context"]]
        responses = self.trainer.sample(queries, self.generation_kwargs, batch_size or self.generation_batch_size,
                                        self.builder.generation_padding_side, eos_token_ids=self.stop_ids)
        skip = 1 if self.is_encoder_decoder else 0
        texts = [clean_response(self.trainer.tokenizer.decode(r[skip:], skip_special_tokens=True), self.builder)
                 for r in responses]
        tok = next(iter(self.empathy.tokenizers.values()))
        contexts = [serialize_context(turns, tok, self.empathy.max_context_len, self.builder.speaker_tag,
                                      self.builder.listener_tag) for turns in batch["context"]]
        return queries, responses, texts, contexts

    def train_step(self, step: int) -> dict:
        t0 = time.perf_counter()
        batch = self.train[self.batch_rows(step)]
        queries, responses, texts, contexts = self.rollout(batch)
        t1 = time.perf_counter()
        total, parts = self.reward(contexts, texts, batch["response"], batch)
        t2 = time.perf_counter()
        row = {"step": step, **self._gather_means(total, parts, responses, texts)}
        if not self._all_finite(total):
            return self._skip(step, row)
        self.nan_streak = 0
        adjusted = apply_baseline(total.detach().float().cpu(), self.cfg.reward_baseline, self.cfg.samples_per_context)
        stats = self.trainer.step(queries, responses, list(adjusted))
        t3 = time.perf_counter()
        row.update({
            "kl": stats["objective/kl"], "kl_coef": stats["objective/kl_coef"],
            "entropy": stats["objective/entropy"], "policy_loss": stats["ppo/loss/policy"],
            "value_loss": stats["ppo/loss/value"], "total_loss": stats["ppo/loss/total"],
            "policy_entropy": stats["ppo/policy/entropy"], "clipfrac": stats["ppo/policy/clipfrac"],
            "learning_rate": stats["ppo/learning_rate"],
            "time/generation": t1 - t0, "time/reward": t2 - t1, "time/optimization": t3 - t2, "time/step": t3 - t0,
        })
        row = {k: (float(v) if isinstance(v, (np.floating, np.ndarray, torch.Tensor)) else v) for k, v in row.items()}
        self._log(row, "log.jsonl")
        return row

    def _gather_means(self, total, parts, responses, texts) -> dict:
        acc = self.trainer.accelerator
        skip = 1 if self.is_encoder_decoder else 0
        special = set(self.trainer.tokenizer.all_special_ids)
        n_tokens = [sum(int(t) not in special for t in r[skip:]) for r in responses]
        local = {"reward": total.float(), **{f"reward/{k}": v.float() for k, v in parts.items()},
                 "response_tokens": torch.tensor(n_tokens, dtype=torch.float),
                 "response_words": torch.tensor([len(t.split()) for t in texts], dtype=torch.float),
                 "empty_responses": torch.tensor([float(not t) for t in texts])}
        means = {k: float(acc.gather(v.to(acc.device)).nanmean()) for k, v in local.items()}
        if "reward/empathy" in means:
            means["r_emp"] = means["reward/empathy"]
        return means

    def _all_finite(self, total: torch.Tensor) -> bool:
        acc = self.trainer.accelerator
        bad = torch.tensor([0.0 if torch.isfinite(total).all() else 1.0], device=acc.device)
        return float(acc.reduce(bad, reduction="sum")) == 0.0  # every rank skips together

    def _skip(self, step: int, row: dict) -> dict:
        self.nan_streak += 1
        self.skipped_steps += 1
        warnings.warn(f"step {step}: NaN or infinite reward, step skipped "
                      f"({self.nan_streak}/{self.cfg.nan_patience} in a row)", stacklevel=2)
        row.update({"skipped": True, "nan_streak": self.nan_streak})
        self._log(row, "log.jsonl")
        if self.nan_streak >= self.cfg.nan_patience:
            last = self.last_checkpoint or "none (no checkpoint was saved yet)"
            raise UserError(f"{self.nan_streak} PPO steps in a row (up to step {step}) got NaN or infinite "
                            f"rewards; stopped. Last good checkpoint: {last}")
        return row

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict | None:
        """Mean R_emp, Emp-F1 and KL to the reference on the fixed held-out subset, fixed sampling seed."""
        from accelerate.utils import gather_object
        from sklearn.metrics import f1_score

        from emprl.paired import per_context_means

        if not self.eval_rows:  # eval_samples: 0
            return None
        rows = self.eval_rows[self.rank::self.world]
        batch = self.eval_data[rows] if rows else {c: [] for c in self.eval_data.column_names}
        local = {"row": list(rows), "r_emp": [], "gold": [], "pred": [], "kl": [], "words": [], "examples": []}
        if rows:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):  # the training random streams stay untouched
                torch.manual_seed(self.cfg.eval_seed + self.rank)
                queries, responses, texts, contexts = self.rollout(batch, self.cfg.eval_batch_size)
            gold = torch.tensor([[batch[m][i] for m in self.empathy.mechanisms] for i in range(len(rows))])
            r_emp, pred = self.empathy.reward_and_levels(contexts, texts, gold)
            local["r_emp"], local["pred"] = r_emp.cpu().tolist(), pred.cpu().tolist()
            local["gold"] = gold.tolist()
            local["kl"] = self.trainer.sequence_kl(queries, responses).tolist()
            local["words"] = [len(t.split()) for t in texts]
            local["examples"] = [{"context": c, "response": t} for c, t in zip(contexts[:2], texts[:2])]
        merged = {k: [x for part in gather_object([local[k]]) for x in part] for k in local}
        gold, pred = np.array(merged["gold"]), np.array(merged["pred"])
        f1 = {m: 100.0 * f1_score(gold[:, i], pred[:, i], labels=[0, 1, 2], average="weighted", zero_division=0)
              for i, m in enumerate(self.empathy.mechanisms)}
        result = {"step": step, "r_emp": float(np.mean(merged["r_emp"])), "emp_f1": float(np.mean(list(f1.values()))),
                  **{f"emp_f1/{m}": v for m, v in f1.items()}, "kl": float(np.mean(merged["kl"])),
                  "response_words": float(np.mean(merged["words"])),
                  "empty_responses": float(np.mean([w == 0 for w in merged["words"]])),
                  "samples": len(merged["r_emp"]), "examples": merged["examples"][:3],
                  PER_CONTEXT: per_context_means(merged["r_emp"], merged["row"])[1].tolist()}
        result.update(self._paired_with_sft(result))
        self.eval_history.append(result)
        self._log(result, "eval.jsonl")
        if self.is_main:
            paired = (f"  Delta R_emp vs SFT {result['delta_r_emp']:+.4f} "
                      f"[{result['delta_r_emp_ci'][0]:+.4f}, {result['delta_r_emp_ci'][1]:+.4f}]"
                      if "delta_r_emp" in result else "")
            logger.info("eval step %d: R_emp %.4f  Emp-F1 %.2f  KL %.3f%s", step, result["r_emp"],
                        result["emp_f1"], result["kl"], paired)
        if self.best is None or result["r_emp"] > self.best["r_emp"]:
            self.best = _summary(result)
            self._save_best()
        return result

    def _paired_with_sft(self, result: dict) -> dict:
        """The paired difference to the step-0 evaluation (the SFT policy): same contexts, same
        sampling seed, per-context means over eval_repeats samples, 95% bootstrap CI over contexts."""
        from emprl.paired import paired_difference

        base = next((r for r in self.eval_history if r["step"] == 0), None)
        if base is None or PER_CONTEXT not in base or len(base[PER_CONTEXT]) != len(result[PER_CONTEXT]):
            return {}
        d = paired_difference(result[PER_CONTEXT], base[PER_CONTEXT], seed=self.cfg.eval_seed)
        return {"delta_r_emp": d["delta"], "delta_r_emp_ci": [d["ci_low"], d["ci_high"]],
                "delta_r_emp_p": d["p_value"], "contexts": d["n"]}

    def evaluated_at(self, step: int) -> bool:
        return any(r["step"] == step for r in self.eval_history)

    def _save_best(self) -> None:
        folder = os.path.join(self.cfg.output_dir, "best")
        note = json.dumps(self.best, indent=2) + "\n"
        if self.trainer.is_peft_model:  # the adapter now; merged into full weights in finish()
            self.trainer.save_adapter(folder)
            if self.is_main:
                atomic_write_text(os.path.join(folder, "best.json"), note)
        else:
            self.trainer.export_policy(folder, extra_files={"best.json": note})
        self.trainer.accelerator.wait_for_everyone()

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        path = os.path.join(self.cfg.output_dir, f"checkpoint-{step}")
        self.trainer.save_checkpoint(path, {
            "step": step, "samples_consumed": step * self.ppo_cfg.batch_size * self.world,
            "nan_streak": self.nan_streak, "skipped_steps": self.skipped_steps, "best": self.best,
            "eval_history": self.eval_history, "recipe_hash": recipe_hash(self.cfg, self.ppo_cfg)})
        if self.is_main:
            rotate_checkpoints(self.cfg.output_dir, self.cfg.save_total_limit)
        self.last_checkpoint = path
        self.trainer.accelerator.wait_for_everyone()

    def resume(self, path: str) -> int:
        state = self.trainer.load_checkpoint(path)
        step = int(state["step"])
        if state.get("recipe_hash") != recipe_hash(self.cfg, self.ppo_cfg):
            warnings.warn(f"{path}: the recipe changed since this checkpoint was written", stacklevel=2)
        self.nan_streak, self.skipped_steps = state["nan_streak"], state["skipped_steps"]
        self.best, self.eval_history, self.last_checkpoint = state["best"], state["eval_history"], path
        best_note = os.path.join(self.cfg.output_dir, "best", "best.json")
        if os.path.isfile(best_note):  # best/ may hold a policy evaluated after this checkpoint
            with open(best_note, encoding="utf-8") as fh:
                on_disk = json.load(fh)
            if self.best is None or on_disk["r_emp"] >= self.best["r_emp"]:
                self.best = on_disk
        if self.is_main:
            for name in ("log.jsonl", "eval.jsonl"):  # drop rows written after the checkpoint
                _truncate_jsonl(os.path.join(self.cfg.output_dir, name), step)
            logger.warning("resuming from %s (step %d)", path, step)
        self.trainer.accelerator.wait_for_everyone()
        return step

    # -- logging and outputs ----------------------------------------------------------------------------
    def progress(self, initial: int):
        from tqdm.auto import tqdm

        return tqdm(total=self.ppo_cfg.steps, initial=initial, desc="PPO", unit="step", disable=not self.is_main)

    def _log(self, row: dict, name: str) -> None:
        if not self.is_main:
            return
        with open(os.path.join(self.cfg.output_dir, name), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        prefix = "eval/" if name == "eval.jsonl" else "train/"
        scalars = {prefix + k: v for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(v)}
        if self.ppo_cfg.log_with:
            self.trainer.accelerator.log(scalars, step=row["step"])

    def finish(self, step: int, stage, minutes: float) -> None:
        acc, out = self.trainer.accelerator, self.cfg.output_dir
        checksums = _gather_checksums(self.trainer)
        _export_into(self.trainer, out)                     # the final policy, value head included
        if self.trainer.is_peft_model:
            self.trainer.save_adapter(os.path.join(out, "adapter"))
            acc.wait_for_everyone()
            best = os.path.join(out, "best")
            if os.path.isfile(os.path.join(best, "adapter_model.safetensors")):
                self.trainer.load_adapter_weights(best)     # training is over: reuse the live model
                note = _read_text(os.path.join(best, "best.json")) if self.is_main else ""
                self.trainer.export_policy(best, extra_files={"best.json": note})
                self.trainer.load_adapter_weights(os.path.join(out, "adapter"))  # back to the final policy
        acc.wait_for_everyone()
        acc.end_training()
        if not self.is_main:
            return
        log_rows = _read_jsonl(os.path.join(out, "log.jsonl"))
        trained = [r for r in log_rows if not r.get("skipped")]
        final = _summary(self.eval_history[-1]) if self.eval_history else {}
        metrics = {
            "sft": next((_summary(r) for r in self.eval_history if r["step"] == 0), None),
            "final": final, "best": self.best, "steps": step, "skipped_steps": self.skipped_steps,
            "train_kl_last": trained[-1]["kl"] if trained else None,
            "minutes": minutes, "world_size": self.world, "rank_weight_checksums": checksums,
        }
        atomic_write_json(os.path.join(out, "metrics.json"), metrics)
        plot_training_curves(log_rows, self.eval_history, os.path.join(out, "training_curves.png"))
        sft_r_emp = (metrics["sft"] or {}).get("r_emp", math.nan)
        card_metrics = {"held-out R_emp (SFT, step 0)": sft_r_emp, "held-out R_emp (final)": final.get("r_emp"),
                        "held-out Delta R_emp vs SFT (final, paired)": final.get("delta_r_emp"),
                        "held-out Emp-F1 (final)": final.get("emp_f1"),
                        "held-out KL to reference (final)": final.get("kl"),
                        "held-out R_emp (best)": (self.best or {}).get("r_emp"), "PPO steps": step}
        write_model_card(out, "EmpRL PPO policy", _CARD_SUMMARY, config_to_dict(self.cfg, self.ppo_cfg),
                         {k: v for k, v in card_metrics.items() if v is not None}, extra=_CARD_USAGE)
        stage.stamp(out)  # last: marks the folder complete
        ci = final.get("delta_r_emp_ci")
        paired = (f" (paired Delta {final['delta_r_emp']:+.4f}, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}])"
                  if ci else "")
        print(f"emprl.ppo: done in {minutes:.1f} min; held-out R_emp {sft_r_emp:.4f} (SFT) -> "
              f"{final.get('r_emp', math.nan):.4f} (PPO){paired}, KL to reference {final.get('kl', math.nan):.3f}; "
              f"outputs in {out}")


_CARD_SUMMARY = """Empathetic response generator fine-tuned with PPO (TRL 0.11.4) against the EmpRL empathy
reward R_emp = exp(-sum_i CE(identifier_i(c, y_hat), l_i)), initialised from the SFT policy, with a
KL penalty to it. `model.safetensors` also holds the value head (`v_head.*`)."""
_CARD_USAGE = """## Usage

```python
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM   # plain inference
from trl import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead  # + value head
```

Files: `log.jsonl` (per PPO step), `eval.jsonl` (held-out evaluations), `training_curves.png`,
`metrics.json`, `best/` (best held-out R_emp), `runs/` (tensorboard)."""


# -----------------------------------------------------------------------------------------------------


PER_CONTEXT = "per_context_r_emp"


def _summary(result: dict) -> dict:
    """An evaluation row without its bulky parts (examples, per-context values)."""
    return {k: v for k, v in result.items() if k not in ("examples", PER_CONTEXT)}


def load_value_head_policy(cfg: PPOScriptConfig):
    """The SFT policy with a fresh value head, and its reference: LoRA -> adapters off (``None``);
    full fine-tuning -> a frozen copy. An SFT folder holding a LoRA adapter is merged first, so the
    reference is the SFT policy and not the pre-SFT base (docs/lora-reference.md)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from trl import (
        AutoModelForCausalLMWithValueHead,
        AutoModelForSeq2SeqLMWithValueHead,
        create_reference_model,
    )

    from emprl.models import is_encoder_decoder, resolve_model
    from emprl.policy import ensure_pad_token

    path = resolve_model(cfg.sft_model_path)
    adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
    if adapter:
        from peft import PeftConfig

        base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
        enc_dec = is_encoder_decoder(resolve_model(base_path))
    else:
        enc_dec = is_encoder_decoder(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if adapter and not os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(base_path))
    dtype = torch.bfloat16 if (cfg.bf16 and cfg.use_lora) else torch.float32
    auto = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    if adapter:
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

        peft_auto = AutoPeftModelForSeq2SeqLM if enc_dec else AutoPeftModelForCausalLM
        base = peft_auto.from_pretrained(path, dtype=dtype).merge_and_unload()
    else:
        base = auto.from_pretrained(path, dtype=dtype)
    ensure_pad_token(base, tokenizer)
    peft_config = None
    if cfg.use_lora:
        from peft import LoraConfig, TaskType

        peft_config = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM if enc_dec else TaskType.CAUSAL_LM,
                                 r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.lora_target_modules)
    wrapper = AutoModelForSeq2SeqLMWithValueHead if enc_dec else AutoModelForCausalLMWithValueHead
    model = wrapper.from_pretrained(base, peft_config=peft_config)
    ref_model = None if cfg.use_lora else create_reference_model(model)
    return model, ref_model, tokenizer, enc_dec, path


def plot_training_curves(log_rows: list[dict], eval_rows: list[dict], path: str) -> None:
    """Reward and total loss against step (the paper's Fig. 7), with held-out R_emp as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in log_rows if not r.get("skipped")]
    steps = [r["step"] for r in rows]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_r.plot(steps, [r.get("r_emp", r["reward"]) for r in rows], label="train R_emp (batch mean)")
    if eval_rows:
        eval_steps = [r["step"] for r in eval_rows]
        ax_r.plot(eval_steps, [r["r_emp"] for r in eval_rows], "o--", label="held-out R_emp")
        base = next((r["r_emp"] for r in eval_rows if r["step"] == 0), None)
        paired = [r for r in eval_rows if "delta_r_emp_ci" in r]
        if base is not None and paired:  # SFT's level + the paired 95% CI of the change
            lo = [base] + [base + r["delta_r_emp_ci"][0] for r in paired]
            hi = [base] + [base + r["delta_r_emp_ci"][1] for r in paired]
            ax_r.fill_between([0] + [r["step"] for r in paired], lo, hi, alpha=0.25, color="tab:orange",
                              label="SFT + paired 95% CI of Delta")
    ax_r.set(xlabel="PPO step", ylabel="reward", title="Reward")
    ax_r.legend()
    ax_l.plot(steps, [r.get("total_loss", float("nan")) for r in rows], color="tab:red")
    ax_l.set(xlabel="PPO step", ylabel="loss", title="Total PPO loss")
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def _choose_precision(cfg: PPOScriptConfig, ppo_cfg: PPOConfig) -> str:
    """bf16 autocast where the device computes it natively (``mixed_precision: auto``), logged. A
    LoRA base loaded in bf16 (``bf16: true``) needs no autocast on top."""
    from emprl.precision import choose_mixed_precision

    if cfg.bf16 and cfg.use_lora:
        logger.info("precision: LoRA base weights in bf16 (bf16: true), no autocast")
        return "bf16-weights"
    device = "cuda" if torch.cuda.is_available() and not ppo_cfg.accelerator_kwargs.get("cpu") else "cpu"
    chosen, why = choose_mixed_precision(cfg.mixed_precision, device)
    logger.info("precision: %s", why)
    if chosen == "bf16":
        ppo_cfg.accelerator_kwargs = {"mixed_precision": "bf16", **(ppo_cfg.accelerator_kwargs or {})}
    return chosen


def _init_distributed() -> None:
    # `accelerate launch`/torchrun on CPU: without this, each process would train alone (docs/cpu-ranks.md).
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        from accelerate import PartialState

        PartialState(cpu=True)


def _check_batch_sizes(ppo_cfg: PPOConfig, samples_per_context: int = 1) -> None:
    if ppo_cfg.steps <= 0:
        raise UserError(f"steps: expected a positive number of PPO steps, got {ppo_cfg.steps}")
    if ppo_cfg.batch_size % samples_per_context:
        raise UserError(f"batch_size ({ppo_cfg.batch_size}) must be a multiple of samples_per_context "
                        f"({samples_per_context})")
    if ppo_cfg.mini_batch_size > ppo_cfg.batch_size:
        raise UserError(f"mini_batch_size ({ppo_cfg.mini_batch_size}) must not exceed batch_size ({ppo_cfg.batch_size})")


def _load_data(cfg: PPOScriptConfig):
    spec = cfg.labelled_data if cfg.labelled_data.startswith("disk:") else f"disk:{cfg.labelled_data}"
    try:
        data = load_dialogues(spec)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"labelled_data: cannot load {cfg.labelled_data} ({err})") from None
    for split in ("train", cfg.eval_split):
        if split not in data:
            raise UserError(f"labelled_data: {cfg.labelled_data} has no '{split}' split")
        missing = [c for c in ("context", "response", *MECHANISMS) if c not in data[split].column_names]
        if missing:
            raise UserError(f"labelled_data: split '{split}' lacks columns {missing}; "
                            "use the output of `python -m emprl.label`")
    if len(data["train"]) == 0:
        raise UserError(f"labelled_data: {cfg.labelled_data} has an empty train split")
    return data["train"], data[cfg.eval_split]


def _eval_subset(n: int, k: int, seed: int) -> list[int]:
    if k <= 0 or n == 0:
        return []
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n)[:k])


def _scheduler(cfg, ppo_cfg, optimizer, world: int):
    from transformers import get_scheduler

    # accelerate steps a prepared scheduler once per process per optimisation step
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_steps * world,
                         num_training_steps=ppo_cfg.steps * world)


def _stop_ids(model, tokenizer, builder) -> list[int]:
    """Tokens that end a reply, the one that ends a turn first: it stands in for an empty reply.
    (SmolLM2's converted tokenizer calls <|im_start|> its eos; its chat template ends turns right.)"""
    from emprl.policy import response_suffix, stop_token_ids

    stops = stop_token_ids(model, tokenizer, builder)
    end = tokenizer.eos_token_id
    if builder.uses_chat_template:
        after = response_suffix(builder)[1]
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
        end = ids[0] if ids else end
    return [end, *[i for i in stops if i != end]] if end is not None else stops


def _find_empathy_reward(composite, cfg, device):
    from reward_models.reward import EmpathyReward

    for _, component in composite.components.values():
        if isinstance(getattr(component, "reward", None), EmpathyReward):
            return component.reward
    if not cfg.identifiers_dir:
        raise UserError("identifiers_dir: needed for the held-out R_emp and Emp-F1 when the reward has no "
                        "empathy component")
    return EmpathyReward.from_pretrained(cfg.identifiers_dir, device=device)


_RUN_ARTIFACTS = ("log.jsonl", "eval.jsonl", "metrics.json", "stage.json", "training_curves.png", "runs",
                  "best", "adapter")


def _prepare_output_dir(cfg: PPOScriptConfig) -> str | None:
    """The checkpoint to resume from, or None for a fresh start (after clearing an earlier run)."""
    from accelerate import PartialState

    state = PartialState()
    checkpoints = list_checkpoints(cfg.output_dir)
    finished = os.path.isfile(os.path.join(cfg.output_dir, "stage.json"))
    if cfg.resume and checkpoints and not cfg.overwrite_output_dir:
        intact = newest_intact_checkpoint(checkpoints)  # a damaged newest one falls back to the one before
        if intact:
            return intact
        raise UserError(f"resume: no checkpoint in {cfg.output_dir} loads; pass --overwrite_output_dir true "
                        "to start over")
    if checkpoints and not finished and not cfg.overwrite_output_dir and not cfg.resume:
        raise UserError(f"output_dir: {cfg.output_dir} holds checkpoints of an interrupted run; pass "
                        "--resume true to continue it or --overwrite_output_dir true to start over")
    if cfg.resume and not checkpoints:
        logger.warning("resume: no checkpoint in %s, starting from the SFT policy", cfg.output_dir)
    if state.is_main_process:
        os.makedirs(cfg.output_dir, exist_ok=True)
        for name in list(os.listdir(cfg.output_dir)):
            path = os.path.join(cfg.output_dir, name)
            if name.startswith("checkpoint-") or name in _RUN_ARTIFACTS:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    state.wait_for_everyone()
    return None


def _export_into(trainer: EmpRLPPOTrainer, output_dir: str) -> None:
    """Export the policy next to the logs: written to a sibling folder, then moved in file by file."""
    staging = os.path.join(output_dir, ".export")
    trainer.export_policy(staging)
    if trainer.accelerator.is_main_process:
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def _gather_checksums(trainer: EmpRLPPOTrainer) -> list[str]:
    from accelerate.utils import gather_object

    return gather_object([trainer.weights_checksum()])


def _read_jsonl(path: str) -> list[dict]:
    rows = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rows.append(json.loads(line))
                except ValueError:  # a line cut short by a crash
                    continue
    return rows


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _truncate_jsonl(path: str, last_step: int) -> None:
    if os.path.isfile(path):
        kept = [r for r in _read_jsonl(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


if __name__ == "__main__":
    run_cli(main)
