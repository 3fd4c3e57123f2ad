"""Dataset readers (official release formats), context serialisation and the bundled demo data."""

from emprl.data.context import keep_recent_turns, serialize_context, turn_roles
from emprl.data.readers import (
    DIALOGUE_FORMATS,
    EPITOME_FILES,
    LEVEL_NAMES,
    MECHANISMS,
    SPLITS,
    load_dialogues,
    load_epitome,
)

__all__ = [
    "DIALOGUE_FORMATS", "EPITOME_FILES", "LEVEL_NAMES", "MECHANISMS", "SPLITS",
    "keep_recent_turns", "load_dialogues", "load_epitome", "serialize_context", "turn_roles",
]
