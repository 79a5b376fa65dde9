"""Zero-shot segmentation evaluation (mIoU) under a named protocol: a thin entry point over `groupvit.evaluation`.

`python scripts/evaluate_segmentation.py --model DIR --protocol voc --dataset ./voc_val` (or `accelerate launch ...`).
"""

import sys

from groupvit.evaluation import main

if __name__ == "__main__":
    sys.exit(main())
