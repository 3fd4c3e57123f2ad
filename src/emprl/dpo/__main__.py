from emprl.common.errors import run_cli
from emprl.dpo.train import main

run_cli(main)
