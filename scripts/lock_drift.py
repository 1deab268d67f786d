"""What `make check-deps` resolved that the lock does not have: one line per package that moved.

usage: python scripts/lock_drift.py requirements.lock .check-deps/resolved.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(path: Path) -> dict[str, str]:
    """Package → version of every `name==version` line (names normalised as PEP 503 does)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            found.setdefault(re.sub(r"[-_.]+", "-", m.group(1)).lower(), m.group(2))
    return found


def main(argv: list[str]) -> int:
    locked, newest = pins(Path(argv[0])), pins(Path(argv[1]))
    moved = sorted(n for n in locked.keys() & newest.keys() if locked[n] != newest[n])
    for name in moved:
        print(f"{name}: {locked[name]} (lock) -> {newest[name]} (newest allowed)")
    for name in sorted(newest.keys() - locked.keys()):
        print(f"{name}: new, {newest[name]}")
    print(f"{len(moved)} package(s) newer than the lock; the smoke check above passed with them")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
