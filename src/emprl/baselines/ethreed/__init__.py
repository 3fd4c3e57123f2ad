"""ETHREED (Li et al.): emotion-tracking hierarchical recurrent encoder-decoder with a stochastic
empathetic policy, trained from scratch as the lightweight baseline (about 12M parameters)."""
