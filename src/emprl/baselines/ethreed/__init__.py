"""ETHREED (Li et al.): emotion-tracking hierarchical recurrent encoder-decoder with a stochastic
empathetic policy, trained from scratch as the lightweight baseline (about 12M parameters)."""

from emprl.baselines.ethreed.batching import ED_EMOTIONS, collate, encode_example
from emprl.baselines.ethreed.model import ETHREED, ETHREEDConfig
from emprl.baselines.ethreed.vocab import Vocab, split_words

__all__ = ["ED_EMOTIONS", "ETHREED", "ETHREEDConfig", "Vocab", "collate", "encode_example", "split_words"]
