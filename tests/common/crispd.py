"""Finding or building the crispd binary under test."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")


def build_crispd():
    """`cargo build -p crispd` (a no-op when up to date); the binary's path.

    CRISPD_BIN names a prebuilt binary instead (e.g. a release build).
    """
    explicit = os.environ.get("CRISPD_BIN")
    if explicit:
        return Path(explicit)
    proc = subprocess.run(
        ["cargo", "build", "-p", "crispd", "--locked"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError("cargo build -p crispd failed:\n" + proc.stdout[-4000:])
    return target_dir() / "debug" / "crispd"
