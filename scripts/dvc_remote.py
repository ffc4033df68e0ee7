"""Set the project's DVC remote, and push/pull with one clear line when none is set.

    python scripts/dvc_remote.py set URL      # make remote URL=...  (dvc remote add -d -f storage)
    python scripts/dvc_remote.py pull [ARGS]  # make pull             (dvc pull ARGS)
    python scripts/dvc_remote.py push [ARGS]  # make push             (dvc push ARGS)

URL: a folder (/mnt/lab-share/emoface-dvc), ssh://user@host/path (needs dvc-ssh) or
s3://bucket/path (needs dvc-s3). `dvc pull` without a remote prints "No remote provided and no
default remote set" followed by a checkout error per output; this says what to do instead.
"""

from __future__ import annotations

import subprocess
import sys

NAME = "storage"
NO_REMOTE = ("no DVC remote is set (.dvc/config): run `make remote URL=<folder | ssh://user@host/"
             "path | s3://bucket/path>` once and commit .dvc/config (README: DVC)")


def dvc(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], text=True,
                          capture_output=capture)


def default_remote() -> str | None:
    out = dvc("remote", "default", capture=True)
    name = out.stdout.strip()
    return name if out.returncode == 0 and name else None


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("set", "pull", "push"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    if argv[0] == "set":
        if len(argv) != 2 or not argv[1].strip():
            print("usage: make remote URL=<folder | ssh://user@host/path | s3://bucket/path>",
                  file=sys.stderr)
            return 2
        rc = dvc("remote", "add", "-d", "-f", NAME, argv[1]).returncode
        if rc == 0:
            print(f"DVC remote '{NAME}' -> {argv[1]} (default); commit .dvc/config")
        return rc
    if default_remote() is None:
        print(NO_REMOTE, file=sys.stderr)
        return 2
    return dvc(*argv).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
