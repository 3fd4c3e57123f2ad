"""Stage 4 — PPO (EmpRL paper §III-C): the SFT policy, a value head, the empathy reward, TRL's PPO.

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

import logging
import os
import time
import warnings

import numpy as np
import torch
from trl import PPOConfig

from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_write_text
from emprl.common.model_files import check_model_files
from emprl.common.preemption import Preemption
from emprl.common.ranks import join_cpu_ranks
from emprl.data import MECHANISMS
from emprl.pipeline.config import parse_recipe, recipe_hash
from emprl.pipeline.lifecycle import begin_stage, stamp_is_current
from emprl.ppo.checkpoint import PREEMPTED_FILE
from emprl.ppo.config import PPOScriptConfig
from emprl.ppo.held_out import HeldOutEvaluation
from emprl.ppo.outputs import RunLog, RunOutputs, prepare_output_dir
from emprl.ppo.setup import (
    build_scheduler,
    check_batch_sizes,
    choose_precision,
    configure_logging,
    eval_subset,
    find_empathy_reward,
    load_data,
    load_value_head_policy,
    rollout_kwargs,
    stop_ids,
    trainer_config,
)
from emprl.ppo.state import PPOState
from emprl.ppo.trainer import EmpRLPPOTrainer
from reward_models.baseline import apply_baseline

logger = logging.getLogger("emprl.ppo")
STAGE = "ppo"
# TRL 0.11.4 announces the classic PPO API's deprecation on every PPOConfig; it is the API we pin
# (docs/rl-effect.md), and the notice would sit before every one-line error.
warnings.filterwarnings("ignore", message=".*PPOConfig.*deprecated", category=FutureWarning)


def main(argv=None):
    cfg, ppo_cfg = parse_recipe((PPOScriptConfig, PPOConfig), argv)
    join_cpu_ranks()  # several CPU ranks: one process group, not one run each (docs/cpu-ranks.md)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.time()
    # Everything is checked before the output folder is touched (docs/lifecycle.md).
    check_batch_sizes(ppo_cfg, cfg.samples_per_context)
    data = load_data(cfg, ppo_cfg.seed)
    check_model_files(cfg.sft_model_path, "sft_model_path")
    for mech in MECHANISMS:  # the identifiers' files too: a damaged one is one line before any folder is made
        if cfg.identifiers_dir and os.path.isdir(os.path.join(cfg.identifiers_dir, mech)):
            check_model_files(os.path.join(cfg.identifiers_dir, mech), f"identifiers_dir ({mech})")
    from trl.core import set_seed

    set_seed(ppo_cfg.seed)  # the value head and LoRA weights are initialised at random
    # Weights that do not fill the model: one line, no folder made (a finished, current run: no load).
    current = not cfg.overwrite_output_dir and stamp_is_current(cfg.output_dir, recipe_hash(cfg, ppo_cfg), STAGE)
    policy = None if current else load_value_head_policy(cfg)
    stage = begin_stage(STAGE, cfg.output_dir, (cfg, ppo_cfg), in_place=True,
                        inputs=[cfg.sft_model_path, cfg.labelled_data, cfg.identifiers_dir],
                        overwrite=cfg.overwrite_output_dir)
    if stage is None:
        return None
    preemption = Preemption(STAGE).install()  # SIGTERM/SIGINT: a checkpoint after the step (docs/lifecycle.md)
    checkpoint = prepare_output_dir(cfg)

    # 1. Load: policy + value head, reference, reward, data (emprl.ppo.setup).
    run = PPORun(cfg, ppo_cfg, data=data, policy=policy)
    state = run.state  # step, NaN streak, evaluations: saved in checkpoints (emprl.ppo.state)
    if checkpoint:
        run.outputs.resume(checkpoint, state)
    else:
        run.evaluation.evaluate(0, state)      # the SFT policy, before any update

    # 2. The PPO loop: rollout -> R_emp -> PPO step; held-out evaluation (emprl.ppo.held_out) and
    #    checkpoints (emprl.ppo.outputs) every so many steps.
    bar = run.progress(initial=state.step)
    while state.step < ppo_cfg.steps:
        if preemption.agreed(run.trainer.accelerator.device):
            bar.close()
            stop(run, state, stage, preemption)
        state.step += 1
        row = run.train_step(state.step)
        bar.update(1)
        bar.set_postfix(reward=f"{row.get('r_emp', row['reward']):.3f}", kl=f"{row.get('kl', 0):.3f}",
                        len=f"{row['response_words']:.1f}")
        if cfg.eval_steps > 0 and state.step % cfg.eval_steps == 0:
            run.evaluation.evaluate(state.step, state)
        if cfg.save_steps > 0 and state.step % cfg.save_steps == 0 and not row.get("skipped"):
            run.outputs.save_checkpoint(state)  # never a checkpoint right after a NaN step
    bar.close()
    preemption.uninstall()
    if not state.evaluated_at(state.step):
        run.evaluation.evaluate(state.step, state)

    # 3. Finish: final policy, best/, metrics, curves, model card, stage.json last.
    run.outputs.finish(state, stage, minutes=(time.time() - start) / 60)
    stage.release()
    return run


def stop(run: PPORun, state: PPOState, stage, preemption: Preemption) -> None:
    """A signalled run: a checkpoint of the step just done (logs are written per step), then exit."""
    if state.last_checkpoint is None or not state.last_checkpoint.endswith(f"-{state.step}"):
        run.outputs.save_checkpoint(state)
    if run.is_main:
        atomic_write_text(os.path.join(run.cfg.output_dir, PREEMPTED_FILE), f"{state.last_checkpoint}\n")
    stage.release()
    preemption.stop(f"saved {state.last_checkpoint}", "rerun the same command (it continues from there)")


class PPORun:
    """The trainer, the reward and the data order, and one PPO step. It owns the run's ``state``
    (emprl.ppo.state) and hands it to the held-out evaluation (``evaluation``) and the outputs
    (``outputs``: checkpoints, resume, finish), which are parts of their own."""

    def __init__(self, cfg: PPOScriptConfig, ppo_cfg: PPOConfig, data: tuple | None = None, policy: tuple | None = None):
        """``data``: the (train, held-out) splits, ``policy``: what ``load_value_head_policy`` returned
        (loaded after seeding with ``ppo_cfg.seed``), when the caller has loaded them already."""
        from accelerate import PartialState
        from trl.core import set_seed

        from emprl.common.policy import prompt_builder_for
        from reward_models.registry import build_reward

        self.cfg = cfg
        ranks = PartialState()
        self.is_main, self.rank, self.world = ranks.is_main_process, ranks.process_index, ranks.num_processes
        check_batch_sizes(ppo_cfg, cfg.samples_per_context)
        if policy is None:
            set_seed(ppo_cfg.seed)  # the value head and LoRA weights are initialised at random
        self.train, self.eval_data = data or load_data(cfg, ppo_cfg.seed)
        model, ref_model, tokenizer, self.is_encoder_decoder, path = policy or load_value_head_policy(cfg)
        self.builder = prompt_builder_for(path, tokenizer, self.is_encoder_decoder,
                                          max_source_tokens=cfg.max_source_tokens, speaker_tag=cfg.speaker_tag,
                                          listener_tag=cfg.listener_tag, system_prompt=cfg.system_prompt)
        tokenizer.padding_side = self.builder.generation_padding_side  # T5: right (docs/padding-sides.md)
        self.stop_ids = stop_ids(model.pretrained_model, tokenizer, self.builder)

        log_with, project_kwargs = configure_logging(cfg, ppo_cfg)
        self.precision, accelerator_kwargs = choose_precision(cfg, ppo_cfg)
        # TRL's config (logs, model card and checkpoints read it too); the caller's stays as parsed
        self.ppo_cfg = ppo_cfg = trainer_config(ppo_cfg, log_with=log_with, project_kwargs=project_kwargs,
                                                accelerator_kwargs=accelerator_kwargs)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=ppo_cfg.learning_rate)
        scheduler = build_scheduler(cfg, ppo_cfg, optimizer, self.world, n_train=len(self.train))
        self.trainer = EmpRLPPOTrainer(config=ppo_cfg, model=model, ref_model=ref_model, tokenizer=tokenizer,
                                       optimizer=optimizer, lr_scheduler=scheduler,
                                       fix_first_token=cfg.fix_first_token, prompt_builder=self.builder,
                                       context_group=cfg.samples_per_context if cfg.group_minibatches else 1)
        if cfg.reuse_encoder_states and self.is_encoder_decoder:  # after the reference was copied
            from emprl.ppo.encoder_reuse import reuse_encoder_states

            acc = self.trainer.accelerator
            for m in (self.trainer.model, self.trainer.ref_model):
                if m is not None:
                    reuse_encoder_states(acc.unwrap_model(m))
        set_seed(ppo_cfg.seed + self.rank)  # each rank samples its own responses

        shared = {"identifiers_dir": cfg.identifiers_dir, "device": self.trainer.accelerator.device,
                  "speaker_tag": self.builder.speaker_tag, "listener_tag": self.builder.listener_tag}
        self.reward = build_reward(cfg.reward, **shared)
        self.empathy = find_empathy_reward(self.reward, cfg, self.trainer.accelerator.device)
        self.generation_kwargs = rollout_kwargs(cfg, tokenizer, self.stop_ids)
        self.generation_batch_size = cfg.generation_batch_size or ppo_cfg.batch_size
        self.state = PPOState()
        self._perms: dict[int, np.ndarray] = {}
        self.log = RunLog(cfg.output_dir, ppo_cfg, self.trainer.accelerator, self.is_main)
        eval_rows = [row for row in eval_subset(len(self.eval_data), cfg.eval_samples, cfg.eval_seed)
                     for _ in range(cfg.eval_repeats)]
        self.evaluation = HeldOutEvaluation(self.eval_data, eval_rows, rollout=self.rollout, empathy=self.empathy,
                                            trainer=self.trainer, log=self.log, seed=cfg.eval_seed,
                                            batch_size=cfg.eval_batch_size, output_dir=cfg.output_dir)
        self.outputs = RunOutputs(cfg, ppo_cfg, self.trainer)

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
        from emprl.common.policy import clean_response, prompt_ids
        from emprl.data import serialize_context

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
        row = {"step": step, **_batch_means(self.trainer, self.is_encoder_decoder, total, parts, responses, texts)}
        if not _all_finite(self.trainer.accelerator, total):
            return self._skip(step, row)
        self.state.nan_streak = 0
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
        self.log.write(row, "log.jsonl")
        return row

    def _skip(self, step: int, row: dict) -> dict:
        state = self.state
        state.nan_streak += 1
        state.skipped_steps += 1
        warnings.warn(f"step {step}: NaN or infinite reward, step skipped "
                      f"({state.nan_streak}/{self.cfg.nan_patience} in a row)", stacklevel=2)
        row.update({"skipped": True, "nan_streak": state.nan_streak})
        self.log.write(row, "log.jsonl")
        if state.nan_streak >= self.cfg.nan_patience:
            last = state.last_checkpoint or "none (no checkpoint was saved yet)"
            raise UserError(f"{state.nan_streak} PPO steps in a row (up to step {step}) got NaN or infinite "
                            f"rewards; stopped. Last good checkpoint: {last}")
        return row

    # -- progress ---------------------------------------------------------------------------------------
    def progress(self, initial: int):
        from tqdm.auto import tqdm

        return tqdm(total=self.ppo_cfg.steps, initial=initial, desc="PPO", unit="step", disable=not self.is_main)



def _batch_means(trainer, is_encoder_decoder: bool, total, parts, responses, texts) -> dict:
    """A step's reward, reward parts and response lengths, averaged over every rank's batch."""
    acc = trainer.accelerator
    skip = 1 if is_encoder_decoder else 0
    special = set(trainer.tokenizer.all_special_ids)
    n_tokens = [sum(int(t) not in special for t in r[skip:]) for r in responses]
    local = {"reward": total.float(), **{f"reward/{k}": v.float() for k, v in parts.items()},
             "response_tokens": torch.tensor(n_tokens, dtype=torch.float),
             "response_words": torch.tensor([len(t.split()) for t in texts], dtype=torch.float),
             "empty_responses": torch.tensor([float(not t) for t in texts])}
    means = {k: float(acc.gather(v.to(acc.device)).nanmean()) for k, v in local.items()}
    if "reward/empathy" in means:
        means["r_emp"] = means["reward/empathy"]
    return means


def _all_finite(acc, total: torch.Tensor) -> bool:
    bad = torch.tensor([0.0 if torch.isfinite(total).all() else 1.0], device=acc.device)
    return float(acc.reduce(bad, reduction="sum")) == 0.0  # every rank skips together


if __name__ == "__main__":
    run_cli(main)
