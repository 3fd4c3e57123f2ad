"""EmpRL-DPO: the empathy reward through preference optimisation, beside PPO (docs/dpo.md).

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.dpo recipes/demo/t5_dpo.yaml

Per round: K responses per training context from the current policy (the paper's decoding) ->
R_emp against the cached gold levels (the recipe's ``reward``, as in PPO) -> one (chosen, rejected)
pair per context whose best and worst rewards differ by more than ``min_reward_margin`` -> TRL's
``DPOTrainer`` with the SFT policy as the reference (LoRA: adapters off; full fine-tuning: a frozen
copy). Round 1 samples from the SFT policy; each further round resamples from the policy it left.

Outputs in ``output_dir``: the final policy (``model.safetensors``, LoRA merged, tokenizer,
``emprl_prompt.json``), ``rounds/round-N/{shards,pairs,policy}`` (scored samples, the pairs as a
``datasets`` folder with a card, the policy after the round), ``log.jsonl`` (DPOTrainer logs),
``metrics.json``, ``README.md`` and, last, ``stage.json``. An interrupted run continues where it
stopped: finished shards and rounds are read back, never resampled or retrained.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time

from trl import DPOTrainer

from emprl.common.classifier_trainer import resume_point, train_preemptible
from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_dir, atomic_write_json, atomic_write_jsonl, read_jsonl, write_model_card
from emprl.common.model_files import check_model_files
from emprl.common.preemption import Preemption
from emprl.dpo.config import DPOScriptConfig, DPOTrainingArguments
from emprl.dpo.pairs import (
    build_pairs,
    load_pairs,
    pair_summary,
    round_rows,
    sample_round,
    save_pairs,
)
from emprl.pipeline.config import config_to_dict, parse_recipe, recipe_hash
from emprl.pipeline.lifecycle import begin_stage

logger = logging.getLogger("emprl.dpo")
STAGE = "dpo"
RUN_FILE = "dpo_run.json"  # the recipe hash of the run that owns the shards and rounds in the folder
ROUND_FILE = "round.json"  # written last into a round's policy folder: the round is finished
# DPOTrainer's checkpoints of the round being trained: a run stopped by a signal continues the round
# from them (docs/lifecycle.md, "Signals"); removed when the round is saved.
TRAINER_DIR = "trainer-checkpoints"


class EmpRLDPOTrainer(DPOTrainer):
    """TRL 0.11.4's DPOTrainer under the newer transformers Trainer we pin: the Trainer passes
    ``num_items_in_batch`` to ``compute_loss`` and ``start_time`` to ``log``, and calls
    ``get_batch_samples`` with its own meaning (a data iterator), a name TRL uses for generation."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, inputs, return_outputs=return_outputs)

    def log(self, logs, start_time=None):
        train_eval = "train" if "loss" in logs else "eval"
        for key, values in self._stored_metrics[train_eval].items():
            logs[key] = float(sum(float(v) for v in values) / len(values))  # TRL stores 0-d tensors
        del self._stored_metrics[train_eval]
        from transformers import Trainer

        return Trainer.log(self, logs, start_time)

    def get_batch_samples(self, *args, **kwargs):
        from transformers import Trainer

        return Trainer.get_batch_samples(self, *args, **kwargs)


def main(argv=None):
    cfg, args = parse_recipe((DPOScriptConfig, DPOTrainingArguments), argv)
    from emprl.common.ranks import join_cpu_ranks
    from emprl.ppo.setup import load_labelled

    join_cpu_ranks()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    start = time.time()
    # Everything is checked before the output folder is touched (docs/lifecycle.md).
    train = load_labelled(cfg.labelled_data)["train"]
    check_model_files(cfg.sft_model_path, "sft_model_path")
    stage = begin_stage(STAGE, cfg.output_dir, (cfg, args), in_place=True,
                        inputs=[cfg.sft_model_path, cfg.labelled_data, cfg.identifiers_dir],
                        overwrite=cfg.overwrite_output_dir)
    if stage is None:
        return None
    _prepare_output_dir(cfg, args, stage.previous)
    # SIGTERM/SIGINT while sampling: the shards sampled so far are kept, and the run stops before it
    # trains; while training: train_preemptible saves a checkpoint (docs/lifecycle.md, "Signals").
    preemption = Preemption(STAGE).install()
    run = DPORun(cfg, args, train)
    run.preemption = preemption
    for r in range(1, cfg.rounds + 1):
        if preemption.requested:
            stage.release()
            preemption.stop(f"rounds before round {r} are saved in {cfg.output_dir}", "rerun the same command")
        run.do_round(r)
    preemption.uninstall()
    finish(run, stage, minutes=(time.time() - start) / 60)
    stage.release()
    return run


class DPORun:
    """The policy, its reference, the reward and the rounds of sample -> pair -> DPO."""

    def __init__(self, cfg: DPOScriptConfig, args: DPOTrainingArguments, train):
        from accelerate import PartialState

        from emprl.common.policy import load_policy, prompt_builder_for, response_suffix
        from reward_models.registry import build_reward

        self.cfg, self.args, self.train = cfg, args, train
        self.state = PartialState()
        self.model, self.tokenizer, self.enc_dec = load_policy(cfg.sft_model_path, dtype=cfg.dtype, for_training=True)
        self.builder = prompt_builder_for(cfg.sft_model_path, self.tokenizer, self.enc_dec)
        # Decoder-only: what the template writes before a reply, so chosen/rejected continue the prompt
        # exactly as the SFT targets did; T5 targets are the reply alone.
        self.answer_prefix = "" if self.enc_dec else response_suffix(self.builder)[0]
        self.ref_model = None
        if cfg.use_lora:  # reference = the same model with adapters off (docs/lora-reference.md)
            self.model = cfg.add_lora(self.model, self.enc_dec)
        else:
            self.ref_model = load_policy(cfg.sft_model_path, dtype=cfg.dtype)[0].eval().requires_grad_(False)
        self.reward = build_reward(cfg.reward, identifiers_dir=cfg.identifiers_dir, device=self.state.device,
                                   speaker_tag=self.builder.speaker_tag, listener_tag=self.builder.listener_tag)
        self.rounds: list[dict] = []
        self.preemption = None  # the stage's SIGTERM/SIGINT handlers (main installs them)

    def round_dir(self, r: int) -> str:
        return os.path.join(self.cfg.output_dir, "rounds", f"round-{r}")

    # -- one round ------------------------------------------------------------------------------------
    def do_round(self, r: int) -> dict:
        policy_dir = os.path.join(self.round_dir(r), "policy")
        if os.path.isfile(os.path.join(policy_dir, ROUND_FILE)):
            return self._resume_round(r, policy_dir)
        pairs, summary = self.make_pairs(r)
        if self.preemption is not None and self.preemption.requested:  # signalled while sampling
            self.preemption.stop(f"round {r}'s samples are saved in {self.round_dir(r)}", "rerun the same command")
        trained = self.train_round(r, pairs) if len(pairs) else {"skipped": "no pairs"}
        info = {"round": r, **summary, "train": trained}
        self._save_round(policy_dir, info)
        self.rounds.append(info)
        return info

    def make_pairs(self, r: int):
        """This round's pairs: read back when already built, else sampled (resuming at the first
        missing shard), selected and saved. Sampling runs on the main process; the others wait."""
        folder = os.path.join(self.round_dir(r), "pairs")
        if self.state.is_main_process and load_pairs(folder) is None:
            rows = round_rows(len(self.train), self.cfg.contexts_per_round, r, self.args.seed)
            samples, stats = sample_round(self.round_dir(r), rows, self.train, self.sample, self.score,
                                          self.cfg.samples_per_context, self.cfg.shard_size, self.args.seed, r)
            pairs = build_pairs(samples, self.cfg.min_reward_margin, self.builder.text)
            summary = {**pair_summary(samples, pairs, self.cfg.samples_per_context, self.cfg.min_reward_margin),
                       **stats, "round": r}
            atomic_write_json(os.path.join(self.round_dir(r), "pairs_summary.json"), summary)
            save_pairs(folder, pairs, summary, config_to_dict(self.cfg))  # last: the pairs say the round is sampled
            logger.info("round %d: %d pairs from %d contexts x K=%d (%d without a pair), mean reward gap %.4f",
                        r, summary["pairs"], summary["contexts"], summary["samples_per_context"],
                        summary["contexts_without_pair"], summary["mean_reward_gap"])
        self.state.wait_for_everyone()
        with open(os.path.join(self.round_dir(r), "pairs_summary.json"), encoding="utf-8") as fh:
            summary = json.load(fh)
        return (load_pairs(folder) if summary["pairs"] else []), summary  # datasets keeps no empty folder

    def sample(self, contexts, seed: int) -> list[str]:
        from emprl.common.policy import GenerationSettings, generate_responses

        settings = GenerationSettings.from_recipe(self.cfg, seed=seed)
        model = self.model.to(self.state.device)
        return generate_responses(model, self.tokenizer, self.builder, list(contexts), settings,
                                  batch_size=self.cfg.generation_batch_size, progress=False)

    def score(self, contexts, responses, batch):
        import torch

        with torch.no_grad():
            return self.reward(list(contexts), list(responses), batch["response"], batch)

    def train_round(self, r: int, pairs) -> dict:
        """One DPOTrainer run on this round's pairs; the policy object carries over to the next round."""
        from datasets import Dataset
        from transformers import set_seed

        set_seed(self.args.seed + r)
        data = Dataset.from_dict({"prompt": list(pairs["prompt"]),
                                  "chosen": [self.answer_prefix + t for t in pairs["chosen"]],
                                  "rejected": [self.answer_prefix + t for t in pairs["rejected"]]})
        args = copy.deepcopy(self.args)
        args.output_dir = os.path.join(self.cfg.output_dir, TRAINER_DIR)
        args.seed = self.args.seed + r
        trainer = EmpRLDPOTrainer(model=self.model, ref_model=self.ref_model, args=args, train_dataset=data,
                                  tokenizer=self._trainer_tokenizer())
        resume = resume_point(args.output_dir)  # a round a signal stopped: its checkpoint
        result = train_preemptible(trainer, STAGE, resume, "rerun the same command (finished rounds are kept, "
                                   "this one continues from that checkpoint)", self.preemption)
        self.model = trainer.accelerator.unwrap_model(trainer.model)
        if self.state.is_main_process:
            rows = [{"round": r, **row} for row in trainer.state.log_history]
            atomic_write_jsonl(os.path.join(self.round_dir(r), "log.jsonl"), rows)
            shutil.rmtree(args.output_dir, ignore_errors=True)
        last = next((row for row in reversed(trainer.state.log_history) if "rewards/accuracies" in row), {})
        return {"steps": trainer.state.global_step, "train_loss": result.training_loss,
                **{k: v for k, v in last.items() if k.startswith(("rewards/", "logps/"))}}

    def _trainer_tokenizer(self):
        """The tokenizer DPOTrainer appends its ``eos`` with: for a chat template, the token that ends
        a turn (what generation stops at), not the converted tokenizer's eos (docs/dpo.md)."""
        from emprl.common.policy import end_of_turn_id

        tok = copy.deepcopy(self.tokenizer)
        end = None if self.enc_dec else end_of_turn_id(tok, self.builder)
        if end is not None:
            tok.eos_token = tok.convert_ids_to_tokens(end)
        return tok

    def _save_round(self, policy_dir: str, info: dict) -> None:
        if self.state.is_main_process:
            with atomic_dir(policy_dir) as tmp:  # a LoRA policy saves its adapter, a full one its weights
                self.model.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)
                atomic_write_json(os.path.join(tmp, ROUND_FILE), info)
        self.state.wait_for_everyone()

    def _resume_round(self, r: int, policy_dir: str) -> dict:
        """A finished round: its policy is loaded (safetensors) and nothing is sampled or trained."""
        from emprl.common.policy import load_policy

        if self.cfg.use_lora:
            from peft import PeftModel

            base = load_policy(self.cfg.sft_model_path, dtype=self.cfg.dtype, for_training=True)[0]
            self.model = PeftModel.from_pretrained(base, policy_dir, is_trainable=True)
        else:
            self.model = load_policy(policy_dir, dtype=self.cfg.dtype, for_training=True)[0]
        with open(os.path.join(policy_dir, ROUND_FILE), encoding="utf-8") as fh:
            info = json.load(fh)
        logger.warning("round %d is finished in %s; loaded its policy", r, policy_dir)
        self.rounds.append(info)
        return info


def finish(run: DPORun, stage, minutes: float) -> None:
    """The final policy (LoRA merged), metrics, card and, last, the stamp."""
    from emprl.common.policy import save_prompt_settings

    out = run.cfg.output_dir
    if not any("steps" in (r.get("train") or {}) for r in run.rounds):
        raise UserError(f"no round produced a preference pair (min_reward_margin {run.cfg.min_reward_margin}); "
                        "lower the margin or sample more responses per context")
    if run.state.is_main_process:
        model = run.model.merge_and_unload() if run.cfg.use_lora else run.model  # training is over
        staging = os.path.join(out, ".export")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        run.tokenizer.padding_side = run.builder.generation_padding_side
        run.tokenizer.save_pretrained(staging)
        save_prompt_settings(staging, run.builder)
        for name in os.listdir(staging):  # moved in whole files, the stamp still absent
            os.replace(os.path.join(staging, name), os.path.join(out, name))
        shutil.rmtree(staging, ignore_errors=True)
        metrics = {"rounds": run.rounds, "minutes": minutes,
                   "reward_evaluations": sum(r.get("reward_evaluations", 0) for r in run.rounds),
                   "pairs": sum(r.get("pairs", 0) for r in run.rounds)}
        atomic_write_json(os.path.join(out, "metrics.json"), metrics)
        logs = [row for r in range(1, len(run.rounds) + 1)
                for row in read_jsonl(os.path.join(run.round_dir(r), "log.jsonl"))]
        atomic_write_jsonl(os.path.join(out, "log.jsonl"), logs)
        last = run.rounds[-1]
        card = {"rounds": len(run.rounds), "reward evaluations (samples scored)": metrics["reward_evaluations"],
                "preference pairs": metrics["pairs"], "mean chosen reward (last round)": last.get("mean_chosen_reward"),
                "mean rejected reward (last round)": last.get("mean_rejected_reward"), "minutes": minutes}
        write_model_card(out, "EmpRL-DPO policy", _CARD_SUMMARY, config_to_dict(run.cfg, run.args),
                         {k: v for k, v in card.items() if v is not None})
        stage.stamp(out)  # last: marks the folder complete
        print(f"emprl.dpo.train: done in {minutes:.1f} min; {metrics['pairs']} pairs from "
              f"{metrics['reward_evaluations']} scored samples over {len(run.rounds)} round(s); outputs in {out}")
    run.state.wait_for_everyone()


_CARD_SUMMARY = """Empathetic response generator trained with DPO (TRL 0.11.4 `DPOTrainer`) on preference pairs
judged by the EmpRL empathy reward R_emp: per training context, the best and the worst of K sampled responses.
The reference policy is the SFT policy. `rounds/round-N/pairs` holds each round's pairs (a `datasets` folder)."""


def _prepare_output_dir(cfg: DPOScriptConfig, args, previous: str) -> None:
    """Keep an interrupted run of the same recipe (its shards and rounds are reused); clear anything
    else this stage wrote before (a finished run whose recipe or inputs changed, --overwrite_output_dir)."""
    from accelerate import PartialState

    from emprl.pipeline.lifecycle import OWNER_FILE

    state = PartialState()
    run_file = os.path.join(cfg.output_dir, RUN_FILE)
    current = recipe_hash(cfg, args)
    recorded = None
    if os.path.isfile(run_file):
        with open(run_file, encoding="utf-8") as fh:
            recorded = json.load(fh).get("recipe_hash")
    resume = previous == "interrupted" and recorded == current and not cfg.overwrite_output_dir
    if state.is_main_process:
        if not resume:
            for name in os.listdir(cfg.output_dir):
                if name != OWNER_FILE:
                    path = os.path.join(cfg.output_dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        else:
            logger.warning("continuing the interrupted run in %s (finished shards and rounds are reused)",
                           cfg.output_dir)
        atomic_write_json(run_file, {"recipe_hash": current})
    state.wait_for_everyone()


if __name__ == "__main__":
    run_cli(main)
