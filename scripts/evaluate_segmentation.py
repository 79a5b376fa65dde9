"""Zero-shot segmentation evaluation (mIoU) under a named protocol: a thin entry point over
`groupvit.evaluation.evaluate`.

`python scripts/evaluate_segmentation.py --model DIR --protocol voc --dataset ./voc_val` (or `accelerate launch ...`).
"""

import sys

from groupvit.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
