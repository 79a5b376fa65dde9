"""Hugging Face Space entry: the GroupViT zero-shot segmentation page with the bundled example images.

    python app/app.py [--model PATH_OR_ID] [--port N]

The page is built by :func:`groupvit.cli.app.build_demo` of the installed `groupvit` package (`requirements.txt`
installs it; in a checkout, `pip install -e ".[app]"`); this file only adds `examples/*.png`.
"""

import sys
from pathlib import Path

from groupvit.cli.app import main

if __name__ == "__main__":
    sys.exit(main(examples=sorted((Path(__file__).resolve().parent / "examples").glob("*.png"))))
