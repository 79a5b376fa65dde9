"""`groupvit push FOLDER --repo_id ID`: upload a saved model folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError

from groupvit.cli import argument_parser, report_error
from groupvit.hub.push import DEFAULT_COMMIT_MESSAGE, _check_folder, files_to_upload, push_folder_to_hub

logger = logging.getLogger(__name__)

# the Hub client's HTTP errors derive from its transport's HTTPError (httpx), which also covers an unreachable host
# (a connection error there is not an OSError); OSError covers offline mode and local file errors
_NETWORK_ERRORS = (OSError, *HfHubHTTPError.__bases__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(
        "groupvit push",
        description="Push a saved GroupViT folder (safetensors weights, configs, processor, model card) to the Hub.",
    )
    parser.add_argument("folder", help="folder written by save_pretrained")
    parser.add_argument("--repo_id", required=True, help="target Hub repository, namespace/name")
    parser.add_argument("--revision", default=None, help="branch to push to (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--commit_message", default=DEFAULT_COMMIT_MESSAGE, help="commit title")
    parser.add_argument("--create_pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--dry_run", action="store_true", help="list the files that would go up and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `groupvit push FOLDER --repo_id ID [--revision R] [--private] [--commit_message M]`.

    The token comes from `HF_TOKEN` or `huggingface-cli login` (never from the command line, where it would end up
    in the shell history).

    Args:
        argv: Arguments after `push`; default: `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 2 when the folder cannot be pushed or the Hub cannot be reached (one line on
        stderr).
    """
    args = _parse_args(argv)
    try:
        if args.dry_run:
            _check_folder(Path(args.folder))
            print("\n".join(files_to_upload(args.folder)))
            return 0
        commit = push_folder_to_hub(
            args.folder,
            args.repo_id,
            revision=args.revision,
            private=args.private,
            commit_message=args.commit_message,
            create_pr=args.create_pr,
        )
    except ValueError as error:  # a folder that is missing or not a pushable model
        return report_error("groupvit push", error)
    except _NETWORK_ERRORS as error:  # the Hub unreachable, refusing the token, or answering with an HTTP error
        return report_error("groupvit push", f"cannot push to {args.repo_id!r}: {error}")
    print(getattr(commit, "pr_url", None) or getattr(commit, "commit_url", commit))
    return 0
