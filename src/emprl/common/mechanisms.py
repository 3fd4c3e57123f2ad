"""The three EPITOME empathy mechanisms (Sharma et al. 2020) and their levels, defined once.

Every level triple in the pipeline (identifier outputs, gold label columns, Emp-F1) uses this order.
"""

MECHANISMS = ("emotional_reactions", "interpretations", "explorations")
MECHANISM_SHORT = {"emotional_reactions": "ER", "interpretations": "IP", "explorations": "EX"}
LEVEL_NAMES = ("no", "weak", "strong")  # levels 0, 1, 2
