"""``python -m emprl.app``: the same as ``emprl serve`` (emprl.app.server)."""
from emprl.app.server import main
from emprl.common.errors import run_cli

run_cli(main)
