"""Atomic file writes, the one implementation every writer of the package uses (frame cache,
checkpoints, metrics): the data go to a temporary file in the same folder, which is flushed,
fsynced and renamed over the target (os.replace), so a reader, another rank or a crashed run
sees the old content or the new one, never half a file."""
import os
import tempfile


def atomic_write_bytes(path, write) -> None:
    """Call ``write(fileobj)`` on a binary temporary file, then rename it over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
