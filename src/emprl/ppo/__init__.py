"""Stage 4, PPO (EmpRL paper §III-C): ``python -m emprl.ppo RECIPE`` runs ``emprl.ppo.train``."""
