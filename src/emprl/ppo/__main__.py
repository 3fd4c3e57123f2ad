from emprl.common.errors import run_cli
from emprl.ppo.train import main

run_cli(main)
