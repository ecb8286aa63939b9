"""Scratch directories for a session's images, registries and networks."""

import os
import shutil
import tempfile
from pathlib import Path


def shared_tmpdir(prefix):
    """A fixture's body (`yield from`): a new temporary directory that every
    user may read and enter (mkdtemp makes it 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)
