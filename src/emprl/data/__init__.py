"""Dataset readers (official release formats), context serialisation and the bundled demo data."""

from emprl.common.mechanisms import LEVEL_NAMES, MECHANISMS
from emprl.data.context import serialize_context, turn_roles
from emprl.data.readers import load_dialogues, load_epitome

__all__ = ["LEVEL_NAMES", "MECHANISMS", "load_dialogues", "load_epitome", "serialize_context", "turn_roles"]
