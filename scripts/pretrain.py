"""Pretrain GroupViT with Accelerate: `accelerate launch scripts/pretrain.py --config run.yaml [overrides]`.

A thin entry point over `groupvit.cli.pretrain.main`; see `--help`.
"""

import sys

from groupvit.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
