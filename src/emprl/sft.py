"""Stage 1 — supervised fine-tuning of the generator rho on (dialogue context -> listener response).

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.sft recipes/demo/sft.yaml

- Encoder-decoder (the paper's T5-base): full fine-tuning; the source is the tagged transcript
  (most recent turns kept within ``max_source_tokens``), the target the reference reply.
- Decoder-only (LLaMA family): usually LoRA; the prompt comes from the chat template when there is
  one, the loss falls on the reply tokens and the end-of-turn token only. The adapters are merged into
  the weights at the end, so the PPO reference model is this SFT model (docs/lora-reference.md).

The output folder holds the best model by validation loss with its tokenizer and prompt settings,
``metrics.json`` (validation loss before and after), tensorboard logs, a model card and, written
last, ``stage.json``. Rerunning continues from the folder's last checkpoint; ``--overwrite_output_dir
true`` starts afresh.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments

from emprl.common.classifier_trainer import check_checkpoint, train_preemptible
from emprl.common.errors import UserError, run_cli
from emprl.common.policy import LoraArguments, prompt_ids, response_suffix, save_prompt_settings
from emprl.common.precision import CHOICES as PRECISIONS
from emprl.common.ranks import join_cpu_ranks_for_trainer
from emprl.pipeline.config import config_to_dict, parse_recipe, recipe_hash

logger = logging.getLogger("emprl.sft")
STAGE_FILE, INITIAL_EVAL_FILE = "stage.json", "initial_eval.json"


@dataclass
class SFTScriptConfig(LoraArguments):
    model_name_or_path: str = field(metadata={"help": "folder, pypi:<package> or hub id of the base generator"})
    model_revision: str | None = field(default=None, metadata={
        "help": "hub ids only: the commit to fetch (recorded in stage.json; unset = the newest, with a warning)"})
    data: str = field(default="empathetic_dialogues:src/emprl/demo_data/empathetic_dialogues",
                      metadata={"help": "FORMAT:PATH of the dialogue data", "existing_path": True})
    on_bad_rows: str = field(default="error", metadata={"help": "error or skip malformed data rows",
                                                        "choices": ("error", "skip")})
    max_source_tokens: int = field(default=200, metadata={"help": "prompt budget; oldest turns dropped first"})
    max_target_tokens: int = field(default=50, metadata={"help": "reference replies are cut to this"})
    speaker_tag: str = "Speaker:"
    listener_tag: str = "Listener:"
    system_prompt: str | None = field(default=None, metadata={"help": "system message for chat templates"})
    torch_dtype: str | None = field(default=None, metadata={"help": "load dtype: float32, bfloat16, auto"})
    # The LoRA keys (LoraArguments); SFT has always defaulted to the Llama family's attention projections.
    lora_target_modules: list[str] | None = field(default_factory=lambda: ["q_proj", "v_proj"], kw_only=True)
    merge_lora: bool = field(default=True, metadata={"help": "fold the adapters into the saved model"})
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


@dataclass
class SFTTrainingArguments(Seq2SeqTrainingArguments):
    """transformers' training arguments with the paper's choices as defaults: evaluate and save each
    epoch, keep the best model by validation loss, log to tensorboard."""

    output_dir: str = "outputs/sft"
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    load_best_model_at_end: bool = True
    metric_for_best_model: str | None = "eval_loss"
    greater_is_better: bool | None = False
    report_to: str | list[str] | None = "tensorboard"
    learning_rate: float = 1e-4
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    mixed_precision: str = field(default="no", metadata={
        "help": "auto: bf16 autocast where the device computes bf16 natively (CUDA, CPUs with AVX512-BF16/AMX), "
                "fp32 elsewhere; no: as bf16/fp16 say", "choices": PRECISIONS})

    def __post_init__(self):
        import torch

        from emprl.common.precision import choose_mixed_precision

        if self.mixed_precision != "no" and not (self.bf16 or self.fp16):
            device = "cuda" if torch.cuda.is_available() and not self.use_cpu else "cpu"
            chosen, why = choose_mixed_precision(self.mixed_precision, device)
            logging.getLogger("emprl.sft").info("precision: %s", why)
            self.bf16 = chosen == "bf16"
        if self.bf16 and not torch.cuda.is_available():
            self.use_cpu = True  # transformers accepts bf16 without a GPU only when told it runs on the CPU
        super().__post_init__()


def main(argv: list[str] | None = None) -> dict | None:
    join_cpu_ranks_for_trainer()  # several CPU ranks: one process group (docs/cpu-ranks.md)
    cfg, args = parse_recipe((SFTScriptConfig, SFTTrainingArguments), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stamp = recipe_hash(cfg, args)

    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, set_seed

    from emprl.common.models import hub_revision, resolve_model
    from emprl.common.policy import load_policy
    from emprl.common.prompts import PromptBuilder
    from emprl.data import load_dialogues
    from emprl.pipeline.lifecycle import begin_stage, stamp_is_current

    # Inputs are read and checked before the output folder is locked and touched (docs/lifecycle.md).
    data = load_dialogues(cfg.data, cfg.on_bad_rows)
    model_path = resolve_model(cfg.model_name_or_path, cfg.model_revision)
    # Weights that do not fill the model are one line here, before any folder is made (a finished,
    # current run is not worth the load: begin_stage says so below).
    current = not args.overwrite_output_dir and stamp_is_current(args.output_dir, stamp, "sft")
    loaded = None if current else load_policy(model_path, dtype=cfg.torch_dtype, for_training=True)
    run = begin_stage("sft", args.output_dir, (cfg, args), inputs=[cfg.data, model_path], in_place=True,
                      overwrite=args.overwrite_output_dir)
    if run is None:
        return None

    set_seed(args.seed)
    # 1. Data: (context, reference reply) pairs of the train and validation splits.
    train_rows = _limit(data["train"], cfg.max_train_samples, "train", cfg.data)
    eval_rows = _limit(data["validation"], cfg.max_eval_samples, "validation", cfg.data)

    # 2. The base generator (loaded above); its config says whether it is an encoder-decoder.
    model, tokenizer, enc_dec = loaded or load_policy(model_path, dtype=cfg.torch_dtype, for_training=True)
    builder = PromptBuilder(tokenizer, enc_dec, cfg.max_source_tokens, cfg.speaker_tag, cfg.listener_tag,
                            cfg.system_prompt)

    # 3. Token ids and labels (decoder-only: the prompt is masked out of the loss).
    with args.main_process_first(desc="tokenising"):
        train_ds = tokenise(train_rows, builder, cfg.max_target_tokens, "train")
        eval_ds = tokenise(eval_rows, builder, cfg.max_target_tokens, "validation")

    # 4. LoRA adapters where the recipe asks for them.
    if cfg.use_lora:
        model = add_lora(model, cfg, enc_dec, args.gradient_checkpointing)

    # 5. Train, measuring the validation loss before and after.
    resume = _prepare_output_dir(args, stamp)
    tokenizer.padding_side = "right"
    collator = DataCollatorForSeq2Seq(tokenizer, model=model if enc_dec else None, label_pad_token_id=-100,
                                      pad_to_multiple_of=8 if (args.bf16 or args.fp16) else None)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             data_collator=collator, processing_class=tokenizer)
    initial = _initial_eval(trainer, args)
    # A signal: checkpoint after this step, exit 143/130; a full disk: one line (docs/lifecycle.md).
    result = train_preemptible(trainer, "sft", resume, "rerun the same command (it continues from that checkpoint)")
    final = _final_eval(trainer, args)
    metrics = {
        "train_loss": result.training_loss,
        "initial_eval_loss": initial["eval_loss"], "initial_eval_ppl": _ppl(initial["eval_loss"]),
        "eval_loss": final["eval_loss"], "eval_ppl": _ppl(final["eval_loss"]),
        "epochs": trainer.state.epoch, "global_step": trainer.state.global_step,
        "train_examples": len(train_ds), "eval_examples": len(eval_ds),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "best_checkpoint": os.path.basename(trainer.state.best_model_checkpoint or "") or None,
        "resumed_from": os.path.basename(resume) if resume else None,
    }
    trainer.log_metrics("sft", {k: v for k, v in metrics.items() if isinstance(v, (int, float))})

    # 6. Save the best model (adapters merged), metrics, model card, and the stamp last.
    if trainer.is_world_process_zero():
        save_generator(trainer, tokenizer, builder, args.output_dir, merge=cfg.use_lora and cfg.merge_lora)
        _write_results(args.output_dir, cfg, args, metrics, enc_dec)
        run.stamp(model_revision=hub_revision(model_path))  # last: marks the folder complete
    run.release()
    trainer.accelerator.wait_for_everyone()
    return metrics


# -- steps ---------------------------------------------------------------------------------------------


def tokenise(rows, builder, max_target_tokens: int, split: str):
    """Model inputs for one split: input_ids, attention_mask and labels."""
    tok = builder.tokenizer
    if builder.is_encoder_decoder:
        def encode(row):
            ids = prompt_ids(builder, row["context"])
            labels = tok(text_target=row["response"], max_length=max_target_tokens, truncation=True)["input_ids"]
            return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
    else:
        before, after = response_suffix(builder)
        end_ids = tok(after, add_special_tokens=False)["input_ids"] if after.strip() else [tok.eos_token_id]

        def encode(row):
            return causal_example(builder, row["context"], row["response"], max_target_tokens, before, end_ids)
    return rows.map(encode, remove_columns=rows.column_names, desc=f"tokenising {split}")


def causal_example(builder, context, response: str, max_target_tokens: int, before: str,
                   end_ids: list[int]) -> dict:
    """Prompt + reply + end-of-turn; labels are -100 on the prompt so only the reply is learned."""
    prompt = prompt_ids(builder, context)
    reply = builder.tokenizer(before + response, add_special_tokens=False)["input_ids"][:max_target_tokens]
    target = reply + end_ids
    return {"input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
            "labels": [-100] * len(prompt) + target}


def add_lora(model, cfg: SFTScriptConfig, enc_dec: bool, gradient_checkpointing: bool):
    model = cfg.add_lora(model, enc_dec)
    if gradient_checkpointing:  # frozen embeddings would otherwise cut the gradient path
        model.enable_input_require_grads()
    model.print_trainable_parameters()
    return model


def save_generator(trainer, tokenizer, builder, output_dir: str, merge: bool) -> None:
    """The final (best) model as a plain transformers folder, written beside and moved in whole files."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if merge:
        model = model.merge_and_unload()
    tmp = tempfile.mkdtemp(prefix=".tmp-final-", dir=output_dir)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        # Saved for generation, so later stages that pad with the tokenizer get the right side.
        tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = builder.generation_padding_side
        tokenizer.save_pretrained(tmp)
        save_prompt_settings(tmp, builder)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- bookkeeping ---------------------------------------------------------------------------------------


def _limit(rows, n: int | None, split: str, spec: str):
    if len(rows) == 0:
        raise UserError(f"data {spec!r}: the {split} split is empty")
    return rows.select(range(min(n, len(rows)))) if n else rows


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


def _prepare_output_dir(args, stamp: str) -> str | None:
    """Start afresh (overwrite), or find the checkpoint to resume from."""
    from emprl.common.io import read_stage_stamp

    out = args.output_dir
    with args.main_process_first(desc="preparing output_dir"):
        if args.process_index == 0 and os.path.isdir(out):
            info = read_stage_stamp(out)
            if info and info.get("recipe_hash") != stamp and not args.overwrite_output_dir:
                raise UserError(f"{out}: holds a finished SFT run of a different recipe; choose another "
                                "output_dir or pass --overwrite_output_dir true")
            if args.overwrite_output_dir or info:  # a finished run whose inputs changed starts afresh too
                for path in glob.glob(os.path.join(out, "checkpoint-*")):
                    shutil.rmtree(path, ignore_errors=True)
                for name in (STAGE_FILE, INITIAL_EVAL_FILE, "metrics.json"):
                    if os.path.exists(os.path.join(out, name)):
                        os.remove(os.path.join(out, name))
        os.makedirs(out, exist_ok=True)
    if args.resume_from_checkpoint:
        if not os.path.isdir(args.resume_from_checkpoint):
            raise UserError(f"resume_from_checkpoint: folder '{args.resume_from_checkpoint}' does not exist")
        return args.resume_from_checkpoint
    last = None if args.overwrite_output_dir else _newest_intact_checkpoint(out)
    if last:
        logger.info("resuming from %s", last)
    return last


def _newest_intact_checkpoint(out: str) -> str | None:
    """transformers' last checkpoint, or the newest before it that loads and is complete (a save cut
    short by a kill or a full disk leaves a partial one)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from emprl.pipeline.lifecycle import newest_intact_checkpoint

    found = glob.glob(os.path.join(out, f"{PREFIX_CHECKPOINT_DIR}-*"))
    steps = sorted((int(p.rsplit("-", 1)[1]), p) for p in found if p.rsplit("-", 1)[1].isdigit() and os.path.isdir(p))
    return newest_intact_checkpoint([p for _, p in steps], check=check_checkpoint)


def _initial_eval(trainer, args) -> dict:
    """Validation loss of the untouched base model (kept across resumes)."""
    path = os.path.join(args.output_dir, INITIAL_EVAL_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        from emprl.common.io import atomic_write_json

        atomic_write_json(path, metrics)
    return metrics


def _final_eval(trainer, args) -> dict:
    """Validation loss of the kept model; when it is the best checkpoint by eval_loss, that loss was
    measured already (saves a pass over the validation set, minutes on a CPU)."""
    best = trainer.state.best_metric
    if args.load_best_model_at_end and args.metric_for_best_model in ("loss", "eval_loss") and best is not None:
        return {"eval_loss": best}
    return trainer.evaluate()


def _write_results(output_dir: str, cfg, args, metrics: dict, enc_dec: bool) -> None:
    from emprl.common.io import atomic_write_json, write_model_card

    atomic_write_json(os.path.join(output_dir, "metrics.json"), metrics)
    recipe = config_to_dict(cfg)
    recipe.update({k: getattr(args, k) for k in (
        "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs",
        "max_steps", "lr_scheduler_type", "warmup_ratio", "weight_decay", "bf16", "seed", "output_dir")})
    kind = "encoder-decoder, full fine-tuning" if enc_dec and not cfg.use_lora else \
        ("LoRA adapters " + ("merged into the weights" if cfg.merge_lora else "(not merged)"))
    summary = (f"Generator after supervised fine-tuning (EmpRL stage 1) of `{cfg.model_name_or_path}` "
               f"({kind}) on `{cfg.data}`: {metrics['train_examples']} training and {metrics['eval_examples']} "
               f"validation examples. Validation loss {metrics['initial_eval_loss']:.4f} before training, "
               f"{metrics['eval_loss']:.4f} after (PPL {metrics['eval_ppl']:.2f}).")
    extra = ("Chat with it: `python -m emprl.chat --model " + output_dir + "`; sample the test split: "
             "`python -m emprl.generate --model " + output_dir + " --data " + cfg.data + " --out preds.jsonl`.")
    write_model_card(output_dir, "EmpRL SFT generator", summary, recipe, metrics, extra)


if __name__ == "__main__":
    run_cli(main)
