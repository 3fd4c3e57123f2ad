"""Which autocast precision a stage runs under: bf16 where the hardware computes it natively, else fp32.

On CPUs with AVX512-BF16 or AMX, bf16 matrix products are about twice as fast as fp32 (measured on
SmolLM2-135M, 2 threads: forward+backward 4.56 s -> 2.63 s); on CPUs without them bf16 is emulated
and slower, so ``auto`` stays in fp32 there. Only matrix products run in bf16 under autocast; the
stages keep log-probabilities, the PPO ratio and losses in fp32 (accelerate casts model outputs back
to fp32). See docs/rl-effect.md.
"""

from __future__ import annotations

import functools
import os

CHOICES = ("auto", "bf16", "no")
ENV_VAR = "EMPRL_MIXED_PRECISION"
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_supports_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def choose_mixed_precision(requested: str, device_type: str, flags: frozenset[str] | None = None,
                           cuda_bf16: bool | None = None) -> tuple[str, str]:
    """(``"bf16"`` or ``"no"``, the reason in words). ``requested``: auto | bf16 | no.

    ``auto`` follows the environment variable EMPRL_MIXED_PRECISION (bf16 | no) where it is set: one
    switch for every stage, e.g. fp32 everywhere for bit-comparable runs across machines (the tests)."""
    if requested not in CHOICES:
        raise ValueError(f"mixed_precision: expected one of {', '.join(CHOICES)}, got {requested!r}")
    forced = os.environ.get(ENV_VAR, "").strip()
    if requested == "auto" and forced:
        if forced not in ("bf16", "no"):
            raise ValueError(f"{ENV_VAR}: expected bf16 or no, got {forced!r}")
        requested = forced
    if requested == "no":
        return "no", "fp32 (mixed_precision: no" + (f", {ENV_VAR})" if forced else ")")
    if device_type == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = torch.cuda.is_bf16_supported()
        native, where = cuda_bf16, "this GPU"
    elif device_type == "cpu":
        native, where = cpu_supports_bf16(flags), "this CPU"
    else:
        native, where = False, f"device {device_type}"
    if native:
        return "bf16", f"bf16 autocast: {where} computes bf16 natively" + (" (AVX512-BF16/AMX)" if device_type == "cpu" else "")
    if requested == "bf16":
        return "bf16", f"bf16 autocast as requested, although {where} lacks native bf16 (slow)"
    return "no", f"fp32: {where} has no native bf16"
