"""Export of the PPO policy (the functions take the trainer): the policy with its value head,
reloadable by TRL's ``...WithValueHead.from_pretrained`` and by a plain ``AutoModelFor...`` (LoRA
policies merged first), and for LoRA policies the adapter and value head alone."""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from emprl.common.io import atomic_dir

VALUE_HEAD_FILE = "v_head.safetensors"


def export_policy(trainer, folder: str, extra_files: dict[str, str] | None = None) -> None:
    """Write ``trainer``'s policy for inference and further training into ``folder`` (replaced atomically).

    ``model.safetensors`` holds the policy weights (LoRA merged in) plus ``v_head.*`` keys, which
    TRL's ``...WithValueHead.from_pretrained`` picks up and a plain ``AutoModelFor...`` ignores.
    """
    if not trainer.accelerator.is_main_process:
        return
    model = trainer.unwrapped_model
    with atomic_dir(folder) as tmp:
        if trainer.is_peft_model:
            state = merged_lora_state_dict(model.pretrained_model)
            base = model.pretrained_model.get_base_model()
        else:
            state = dict(model.pretrained_model.state_dict())
            base = model.pretrained_model
        state.update({f"v_head.{k}": v for k, v in model.v_head.state_dict().items()})
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        base.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        trainer.tokenizer.save_pretrained(tmp)
        if trainer.prompt_builder is not None:
            from emprl.common.policy import save_prompt_settings

            save_prompt_settings(tmp, trainer.prompt_builder)
        for name, text in (extra_files or {}).items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                fh.write(text)


def save_adapter(trainer, folder: str) -> None:
    """LoRA policies: the adapter (PEFT format) and the value head, for loading on the SFT base."""
    if not (trainer.accelerator.is_main_process and trainer.is_peft_model):
        return
    model = trainer.unwrapped_model
    with atomic_dir(folder) as tmp:
        model.pretrained_model.save_pretrained(tmp, safe_serialization=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.v_head.state_dict().items()},
                  os.path.join(tmp, VALUE_HEAD_FILE))


def load_adapter_weights(trainer, folder: str) -> None:
    """Load an adapter saved by :func:`save_adapter` into the live LoRA policy (used to export best/)."""
    from peft import set_peft_model_state_dict

    model = trainer.unwrapped_model
    set_peft_model_state_dict(model.pretrained_model, load_file(os.path.join(folder, "adapter_model.safetensors")))
    model.v_head.load_state_dict(load_file(os.path.join(folder, VALUE_HEAD_FILE)))


def merged_lora_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The base model's state dict with each LoRA delta added to its weight, under the plain names
    (what ``merge_and_unload`` would give), without touching the live model."""
    from peft.tuners.lora import LoraLayer

    adapter = peft_model.active_adapter
    base = peft_model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            if getattr(module, "use_dora", {}).get(adapter, False):
                raise NotImplementedError("exporting DoRA adapters merged is not supported")
            deltas[name] = module.get_delta_weight(adapter)
    merged = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            owner, _, leaf = key.partition(".base_layer.")
            if leaf == "weight" and owner in deltas:
                value = (value.float() + deltas[owner].float()).to(value.dtype)
            key = f"{owner}.{leaf}"
        merged[key] = value
    return merged
