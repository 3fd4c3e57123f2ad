"""Stage 5, evaluation (paper §IV): ``python -m emprl.evaluate RECIPE`` runs ``emprl.evaluate.run``."""
