#!/usr/bin/env python
"""Derive CLIP's ``vocab.json`` and ``merges.txt`` from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``.

The BPE file ships with OpenAI CLIP (MIT License, Copyright (c) 2021 OpenAI) and is re-distributed unchanged in
the ``open_clip_torch`` wheel as ``open_clip/bpe_simple_vocab_16e6.txt.gz``. This script rebuilds the vocabulary
exactly as ``clip/simple_tokenizer.py::SimpleTokenizer.__init__`` does:

1. the 256 byte-level unicode characters of ``bytes_to_unicode()`` (ids 0..255),
2. the same characters with the ``</w>`` end-of-word suffix (ids 256..511),
3. one token per merge for the first ``49152 - 256 - 2`` merges of the file (ids 512..49405),
4. ``<|startoftext|>`` (id 49406) and ``<|endoftext|>`` (id 49407),

for a total of 49,408 tokens, and writes the files in the layout used by Hugging Face's CLIP checkpoints
(``merges.txt`` starts with the ``#version: 0.2`` header line).

Example:
    Regenerate the files shipped in the package from a downloaded ``open_clip_torch`` wheel::

        python scripts/build_clip_vocab.py open_clip_torch-3.3.0-py3-none-any.whl \
            src/groupvit/resources/clip_tokenizer
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # 48,894, as in CLIP's SimpleTokenizer: ``merges[1 : 49152 - 256 - 2 + 1]``
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2  # 49,408
MERGES_HEADER = "#version: 0.2"


def bytes_to_unicode() -> dict[int, str]:
    """Return CLIP/GPT-2's reversible mapping from the 256 byte values to printable unicode characters.

    Returns:
        A dict mapping each byte value to a single-character string, in CLIP's insertion order (printable
        Latin-1 bytes first, then the remaining bytes mapped to code points from 256 upwards).
    """
    bs = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def read_bpe_text(path: str | Path) -> str:
    """Read the decompressed BPE merges text from a ``.txt.gz`` file or from an ``open_clip_torch`` wheel.

    Args:
        path: Path to ``bpe_simple_vocab_16e6.txt.gz``, to a wheel/zip containing ``open_clip/...txt.gz``, or to
            an already decompressed ``.txt`` file.

    Returns:
        The UTF-8 decoded text of the BPE file.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If a zip archive does not contain the BPE file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE source not found: {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz")]
            if not members:
                raise ValueError(f"{path} does not contain {BPE_MEMBER!r}")
            member = BPE_MEMBER if BPE_MEMBER in members else members[0]
            raw = gzip.decompress(zf.read(member))
    elif path.suffix == ".gz":
        raw = gzip.decompress(path.read_bytes())
    else:
        raw = path.read_bytes()
    return raw.decode("utf-8")


def build_vocab_and_merges(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    """Build CLIP's token-to-id vocabulary and ordered merge list from the BPE file text.

    Args:
        bpe_text: Decompressed contents of ``bpe_simple_vocab_16e6.txt`` (first line is a header).

    Returns:
        ``(vocab, merges)`` where ``vocab`` maps each of the 49,408 tokens to its id and ``merges`` holds the
        48,894 merges as ``"left right"`` strings in rank order.

    Raises:
        ValueError: If the file is too short, a merge line is malformed or the resulting vocabulary is not
            exactly 49,408 unique tokens.
    """
    lines = bpe_text.split("\n")
    merge_lines = lines[1 : NUM_MERGES + 1]
    if len(merge_lines) != NUM_MERGES:
        raise ValueError(f"expected at least {NUM_MERGES} merges after the header, found {len(merge_lines)}")
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(merge_lines, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"line {lineno} of the BPE file is not a merge pair: {line!r}")
        merges.append((parts[0], parts[1]))

    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(tokens) != VOCAB_SIZE or len(vocab) != VOCAB_SIZE:
        raise ValueError(f"expected {VOCAB_SIZE} unique tokens, got {len(tokens)} ({len(vocab)} unique)")
    return vocab, [f"{a} {b}" for a, b in merges]


def write_files(vocab: dict[str, int], merges: list[str], output_dir: str | Path) -> list[Path]:
    """Write ``vocab.json`` and ``merges.txt`` in Hugging Face's CLIP layout.

    Args:
        vocab: Token-to-id mapping.
        merges: Ordered ``"left right"`` merges.
        output_dir: Directory to write into (created if missing).

    Returns:
        The paths written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_path = out / "vocab.json"
    merges_path = out / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    merges_path.write_text("\n".join([MERGES_HEADER, *merges]) + "\n", encoding="utf-8")
    return [vocab_path, merges_path]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Argument list (defaults to ``sys.argv[1:]``).

    Returns:
        Process exit code (0 on success).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="bpe_simple_vocab_16e6.txt.gz, or an open_clip_torch wheel containing it")
    parser.add_argument("output_dir", help="directory that receives vocab.json and merges.txt")
    args = parser.parse_args(argv)

    vocab, merges = build_vocab_and_merges(read_bpe_text(args.input))
    for path in write_files(vocab, merges, args.output_dir):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"vocab size {len(vocab):,}; merges {len(merges):,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
