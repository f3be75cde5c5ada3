"""The command palette (ctrl+p): every action of the app, searchable by name."""

from __future__ import annotations

from textual.command import DiscoveryHit, Hit, Hits, Provider


class CharlmCommands(Provider):
    """Lists the app's actions (the same ones its keys run) that apply right now."""

    def _commands(self):
        app = self.app
        commands = getattr(app, "palette_commands", None)
        return list(commands()) if commands else []

    async def discover(self) -> Hits:
        for title, help_text, run in self._commands():
            yield DiscoveryHit(title, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, run in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, help=help_text)
