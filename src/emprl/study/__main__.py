from emprl.common.errors import run_cli
from emprl.study.run import main

run_cli(main)
