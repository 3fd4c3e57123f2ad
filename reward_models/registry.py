"""A small registry of reward components, so a recipe names its reward instead of code choosing it.

Recipe YAML::

    reward: {empathy: 1.0}                        # the paper: R = R_emp
    reward:
      empathy: {weight: 1.0, identifiers_dir: outputs/demo/identifiers}
      length: {weight: 0.1, target: 15}
      my_pkg.rewards:Politeness: {weight: 0.5}    # a user's class, imported by path

Every component is called on a whole batch, ``component(contexts, responses, references, batch)``,
and returns a FloatTensor [B]; ``batch`` is the dict of dataset columns for those rows (the empathy
component reads its gold levels there). :func:`build_reward` returns a :class:`CompositeReward` whose
call gives the weighted sum and each component's own values for logging.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch

from emprl.common.errors import UserError

from .reward import EmpathyReward

REWARD_REGISTRY: dict[str, type] = {}


def register_reward(name: str) -> Callable[[type], type]:
    """Class decorator: make ``name`` usable as a key of a recipe's ``reward:`` mapping."""

    def wrap(cls: type) -> type:
        if name in REWARD_REGISTRY and REWARD_REGISTRY[name] is not cls:
            raise ValueError(f"reward {name!r} is already registered by {REWARD_REGISTRY[name].__qualname__}")
        REWARD_REGISTRY[name] = cls
        return cls

    return wrap


class RewardComponent:
    """Base class: one batched reward term."""

    def __call__(self, contexts: Sequence, responses: Sequence[str], references: Sequence[str] | None,
                 batch: Mapping | None) -> torch.Tensor:
        raise NotImplementedError


@register_reward("empathy")
class EmpathyRewardComponent(RewardComponent):
    """R_emp from the three identifiers, against the gold levels cached in the batch columns.

    Args: ``identifiers_dir`` (the identifiers stage's output) or a ready ``reward`` (EmpathyReward);
    ``device``/``dtype``/``max_context_len``/``max_response_len``/``batch_size``/``quantize``/``temperature`` go to
    EmpathyReward.
    Contexts may be strings or lists of turns; turns are serialised with ``emprl.data.serialize_context``
    and these tags, so they match what the labelling step scored.
    """

    def __init__(self, identifiers_dir: str | None = None, reward: EmpathyReward | None = None, device=None,
                 dtype=None, max_context_len: int = 200, max_response_len: int = 50, batch_size: int = 64,
                 speaker_tag: str = "Speaker:", listener_tag: str = "Listener:", quantize: str | None = None,
                 temperature: float = 1.0):
        if reward is None:
            if not identifiers_dir:
                raise UserError("reward.empathy: set identifiers_dir (the identifiers stage's output folder)")
            reward = EmpathyReward.from_pretrained(
                identifiers_dir, device=device, dtype=dtype, max_context_len=max_context_len,
                max_response_len=max_response_len, batch_size=batch_size, quantize=quantize,
                temperature=temperature,
            )
        self.reward = reward
        self.speaker_tag, self.listener_tag = speaker_tag, listener_tag

    def serialize(self, context) -> str:
        if isinstance(context, str):
            return context
        from emprl.data import serialize_context

        tok = next(iter(self.reward.tokenizers.values()))
        return serialize_context(list(context), tokenizer=tok, max_tokens=self.reward.max_context_len,
                                 speaker_tag=self.speaker_tag, listener_tag=self.listener_tag)

    def __call__(self, contexts, responses, references=None, batch=None) -> torch.Tensor:
        batch = batch or {}
        missing = [m for m in self.reward.mechanisms if m not in batch]
        if missing:
            raise UserError(
                f"reward.empathy: the data has no gold level columns {missing}; "
                "train on the labelled data written by `python -m emprl.label`"
            )
        gold = {m: batch[m] for m in self.reward.mechanisms}
        return self.reward([self.serialize(c) for c in contexts], list(responses), gold)


@register_reward("length")
class LengthReward(RewardComponent):
    """Bonus for responses near ``target`` words: 1 - min(|n - target| / target, 1), in [0, 1].

    1.0 at exactly ``target`` words, falling linearly to 0 at 0 words or 2 x target words and beyond.
    A counterweight to responses collapsing to a few words during PPO.
    """

    def __init__(self, target: int = 15):
        if not isinstance(target, numbers.Number) or isinstance(target, bool) or target <= 0:
            raise UserError(f"reward.length: target must be a positive number of words, got {target!r}")
        self.target = float(target)

    def __call__(self, contexts, responses, references=None, batch=None) -> torch.Tensor:
        n = torch.tensor([len(r.split()) for r in responses], dtype=torch.float32)
        return 1.0 - ((n - self.target).abs() / self.target).clamp(max=1.0)


class CompositeReward:
    """Weighted sum of named components. Call -> (total FloatTensor [B], {name: FloatTensor [B]})."""

    def __init__(self, components: Mapping[str, tuple[float, Callable]]):
        if not components:
            raise ValueError("CompositeReward needs at least one component")
        self.components = dict(components)

    @property
    def weights(self) -> dict[str, float]:
        return {name: w for name, (w, _) in self.components.items()}

    def __call__(self, contexts, responses, references=None, batch=None):
        parts: dict[str, torch.Tensor] = {}
        total = None
        for name, (weight, component) in self.components.items():
            value = torch.as_tensor(component(contexts, responses, references, batch), dtype=torch.float32)
            if value.shape != (len(responses),):
                raise ValueError(f"reward component {name!r} returned shape {tuple(value.shape)}, "
                                 f"expected ({len(responses)},)")
            if total is not None:
                value = value.to(total.device)
            parts[name] = value
            total = weight * value if total is None else total + weight * value
        return total, parts


def _import_object(path: str):
    """Import ``package.module:Name`` (or ``package.module.Name``) without evaluating any code string."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr or not all(p.isidentifier() for p in module_name.split(".") + attr.split(".")):
        raise UserError(f"reward: {path!r} is neither a registered reward ({_known()}) nor a 'module:Class' path")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"reward: cannot import module {module_name!r} for {path!r} ({err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"reward: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"reward: {path!r} is not a class or callable")
    return obj


def _known() -> str:
    return ", ".join(sorted(REWARD_REGISTRY)) or "none"


def resolve_reward_class(name: str):
    if name in REWARD_REGISTRY:
        return REWARD_REGISTRY[name]
    if ":" in name or "." in name:
        return _import_object(name)
    raise UserError(f"reward: unknown component {name!r}; registered: {_known()} (or give 'module:Class')")


def _instantiate(name: str, cls, args: dict, shared: dict):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(args) - accepted) if not takes_kwargs else []
    if unknown:
        raise UserError(f"reward.{name}: unknown option(s) {unknown}; accepted: {sorted(accepted) or 'none'}")
    # Shared arguments (device, dtype, ...) reach only the components that declare them.
    kwargs = {k: v for k, v in shared.items() if takes_kwargs or k in accepted}
    kwargs.update(args)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise UserError(f"reward.{name}: {err}") from None


def build_reward(spec, **shared) -> CompositeReward:
    """Build the recipe's reward. ``spec`` maps a component name to a weight or to a dict with
    ``weight`` (default 1.0), an optional ``type`` (registered name or 'module:Class'; default: the key,
    so two components of one type can coexist under different keys) and the component's options.
    ``shared`` keyword arguments (e.g. ``device=accelerator.device``) go to each component that accepts them."""
    if isinstance(spec, str):
        spec = {spec: 1.0}
    if not isinstance(spec, Mapping) or not spec:
        raise UserError(f"reward: expected a mapping such as {{empathy: 1.0}}, got {spec!r}")
    components = {}
    for name, value in spec.items():
        if value is None:
            value = {}
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            value = {"weight": value}
        if not isinstance(value, Mapping):
            raise UserError(f"reward.{name}: expected a weight or a mapping of options, got {value!r}")
        args = dict(value)
        weight = args.pop("weight", 1.0)
        if not isinstance(weight, numbers.Number) or isinstance(weight, bool):
            raise UserError(f"reward.{name}.weight: expected a number, got {weight!r}")
        kind = args.pop("type", name)
        if not isinstance(kind, str):
            raise UserError(f"reward.{name}.type: expected a string, got {kind!r}")
        cls = resolve_reward_class(kind)
        components[str(name)] = (float(weight), _instantiate(str(name), cls, args, shared))
    return CompositeReward(components)


__all__ = [
    "REWARD_REGISTRY", "CompositeReward", "EmpathyRewardComponent", "LengthReward",
    "RewardComponent", "build_reward", "register_reward", "resolve_reward_class",
]
