from emprl.common.errors import run_cli
from emprl.evaluate.run import main

run_cli(main)
