"""The one- or two-line header: what is being trained, on what, and where it is saved."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from tui.visible import visible_line


def display_path(path: str | os.PathLike | None) -> str:
    """`path` relative to the working directory when it lies under it, else absolute."""
    if not path:
        return "?"
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except (ValueError, OSError):
        return str(path)


@dataclass(frozen=True)
class HeaderInfo:
    corpus: str = ""
    corpus_chars: int | None = None
    vocab: int | None = None
    layers: int | None = None
    units: int | None = None
    parameters: int | None = None
    preset: str = ""
    objective: str = ""
    device: str = ""
    run_dir: str = ""
    mode: str = "train"  # "train", "saved" (sampling only) or "watch"

    @property
    def model(self) -> str:
        """"LSTM 1×128 102,585 params", or "" before the settings are known."""
        if self.units is None:
            return ""
        model = f"LSTM {self.layers or 1}×{self.units}"
        return model + (f" {self.parameters:,} params" if self.parameters is not None else "")


class RunHeader(Widget):
    """Corpus · vocabulary · model · preset · device · run directory, packed into as
    few lines as the width allows without splitting an item."""

    DEFAULT_CSS = """
    RunHeader {
        height: auto;
        max-height: 3;
        padding: 0 1;
        background: $panel;
        color: $foreground;
    }
    """

    def __init__(self, info: HeaderInfo | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.info = info or HeaderInfo()

    def set_info(self, **changes) -> None:
        """Change some fields (the others keep their values) and redraw."""
        self.info = replace(self.info, **changes)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(width))

    def render(self) -> RenderResult:
        return Text("\n").join(self._lines(self.content_region.width or self.size.width))

    def _lines(self, width: int) -> list[Text]:
        width = max(10, width)
        lines: list[Text] = [Text(no_wrap=True, overflow="ellipsis")]
        for part in self._parts():
            line = lines[-1]
            if line.cell_len and line.cell_len + 2 + part.cell_len > width:
                lines.append(Text(no_wrap=True, overflow="ellipsis"))
                line = lines[-1]
            elif line.cell_len:
                line.append("  ")
            line.append_text(part)
        return lines

    def _parts(self) -> list[Text]:
        info = self.info
        parts: list[Text] = []

        def part(label: str, value: str) -> None:
            piece = Text()
            if label:
                piece.append(f"{label} ", style="dim")
            piece.append(visible_line(value), style="bold")  # a corpus or folder name may hold anything
            parts.append(piece)

        corpus = info.corpus or "…"
        if info.corpus_chars is not None:
            corpus += f" {info.corpus_chars:,} chars"
        part("corpus", corpus)
        if info.vocab is not None:
            part("vocab", str(info.vocab))
        if info.model:
            part("model", info.model)
        if info.preset:
            part("preset", f"{info.preset}/{info.objective}" if info.objective else info.preset)
        part("on", info.device or "…")
        where = display_path(info.run_dir) if info.run_dir else "…"
        if info.mode == "watch":  # another process trains there
            piece = Text()
            piece.append("watching ", style="bold yellow")
            piece.append(visible_line(where), style="bold")
            parts.append(piece)
        else:
            part("run" if info.mode == "train" else "sampling", where)
        return parts
