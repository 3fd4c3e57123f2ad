from emprl.common.errors import run_cli
from emprl.pipeline.run import main

run_cli(main)
