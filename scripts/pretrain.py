"""Pretrain GroupViT with Accelerate: `accelerate launch scripts/pretrain.py --config run.yaml [overrides]`.

A thin entry point over `groupvit.train.main`; see `--help`.
"""

import sys

from groupvit.train import main

if __name__ == "__main__":
    sys.exit(main())
