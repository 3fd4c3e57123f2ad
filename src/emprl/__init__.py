"""EmpRL: empathy level alignment via reinforcement learning, as a TRL-based pipeline."""

__version__ = "0.1.0"
