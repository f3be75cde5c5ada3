"""Remake docs/inspector.svg and docs/cells.svg: the app on a tiny saved run (seeded
weights, tests/app_fixtures.py), at 80x24, through Textual's own SVG screenshot.

    python docs/screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))


async def shoot(keys: list[str], name: str) -> None:
    from tests.app_fixtures import saved_app, settled
    from tests.test_inspector_ui import cells_screen

    app = saved_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        await pilot.press(*keys)
        while "n" in keys and (cells_screen(app) is None or cells_screen(app).traced is None):
            await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        app.save_screenshot(str(DOCS / name))


def main() -> None:
    from tests.app_fixtures import _write_saved_run
    from tests.conftest import tiny_text

    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # the run directory shows as runs/tiny
        os.environ["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")
        corpus = Path("corpora/tiny.txt")
        corpus.parent.mkdir()
        corpus.write_text(tiny_text(6000, seed=3), encoding="utf-8")
        _write_saved_run(Path("runs/tiny"), corpus.resolve())
        asyncio.run(shoot(["i", "left", "left"], "inspector.svg"))
        asyncio.run(shoot(["n", "down"], "cells.svg"))


if __name__ == "__main__":
    main()
