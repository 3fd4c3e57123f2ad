"""The RL-effect study (docs/statistics.md): ``python -m emprl.study RECIPE`` runs ``emprl.study.run``."""
