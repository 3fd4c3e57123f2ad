from emprl.common.errors import run_cli
from emprl.human_eval.run import main

run_cli(main)
