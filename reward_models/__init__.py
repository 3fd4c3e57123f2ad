"""The custom reward model: empathy identifiers, the empathy reward, and a reward-component registry."""

from .identifier import EmpathyIdentifier, EmpathyIdentifierConfig, masked_pool
from .registry import CompositeReward, EmpathyRewardComponent, LengthReward, build_reward, register_reward
from .reward import EmpathyReward, tokenize_pairs

__all__ = [
    "CompositeReward",
    "EmpathyIdentifier",
    "EmpathyIdentifierConfig",
    "EmpathyReward",
    "EmpathyRewardComponent",
    "LengthReward",
    "build_reward",
    "masked_pool",
    "register_reward",
    "tokenize_pairs",
]
