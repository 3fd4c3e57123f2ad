"""EmpRL-DPO (docs/dpo.md): ``python -m emprl.dpo RECIPE`` runs ``emprl.dpo.train``."""
