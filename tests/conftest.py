import os
import sys

# No network in tests: every model is built from a config, every file written by the test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from threads, and tests that launch several processes would
# oversubscribe the cores (measured: 5x slower suites on a 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# fp32 everywhere: values compared with hand computations must not depend on whether this CPU has
# native bf16 (tests of the automatic choice clear this variable themselves).
os.environ["EMPRL_MIXED_PRECISION"] = "no"
sys.path.insert(0, os.path.dirname(__file__))  # so tests can `import tiny`
# and `import compose_demo`: the demo data composer lives in tools/, outside the installed package
sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import torch  # noqa: E402

torch.set_num_threads(1)
