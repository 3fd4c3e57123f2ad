"""The custom reward model: empathy identifiers, the empathy reward, and a reward-component registry."""

from .identifier import EmpathyIdentifier, EmpathyIdentifierConfig, masked_pool
from .registry import (
    REWARD_REGISTRY,
    CompositeReward,
    EmpathyRewardComponent,
    LengthReward,
    RewardComponent,
    build_reward,
    register_reward,
)
from .reward import MECHANISMS, EmpathyReward, empathy_reward_from_logits, tokenize_pairs

__all__ = [
    "MECHANISMS",
    "REWARD_REGISTRY",
    "CompositeReward",
    "EmpathyIdentifier",
    "EmpathyIdentifierConfig",
    "EmpathyReward",
    "EmpathyRewardComponent",
    "LengthReward",
    "RewardComponent",
    "build_reward",
    "empathy_reward_from_logits",
    "masked_pool",
    "register_reward",
    "tokenize_pairs",
]
