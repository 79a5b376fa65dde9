"""Hugging Face Space entry: the GroupViT zero-shot segmentation page with the bundled example images.

    python app/app.py [--model PATH_OR_ID] [--port N]

The page itself is built by :func:`groupvit.cli.app.build_demo`; this file only adds `examples/*.png`. In a checkout
without `pip install -e .`, the package is taken from `../src`; in a Space, install it through `requirements.txt`
(see README.md).
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:
    from groupvit.cli.app import main
except ModuleNotFoundError as error:
    if error.name != "groupvit" or not (HERE.parent / "src" / "groupvit").is_dir():
        raise
    sys.path.insert(0, str(HERE.parent / "src"))
    from groupvit.cli.app import main

if __name__ == "__main__":
    sys.exit(main(examples=sorted((HERE / "examples").glob("*.png"))))
