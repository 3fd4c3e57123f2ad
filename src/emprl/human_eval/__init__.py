"""Human evaluation sheets and scores: ``python -m emprl.human_eval`` runs ``emprl.human_eval.run``."""
