"""A one-line text prompt whose answer is checked before the dialog closes."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

# check(value) -> (result, None) when valid, or (None, "one sentence saying what is wrong")
Check = Callable[[str], "tuple[object, str | None]"]


class PromptScreen(ModalScreen[object]):
    """Dismisses with check(value)'s result, or None on Escape. An invalid answer keeps
    the dialog open, says why under the input and in a notification."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, help_text: str, value: str, check: Check,
                 placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.help_text = help_text
        self.value = value
        self.check = check
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.help_text, classes="dialog-help", markup=False)
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static("", id="prompt-error", markup=False)
            yield Static("Enter to apply · Escape to cancel", classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        result, error = self.check(event.value)
        if error is not None:
            self.query_one("#prompt-error", Static).update(error)
            self.notify(error, title=self.title_text, severity="error")
            return
        self.dismiss(result)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#prompt-error", Static).update("")

    def action_cancel(self) -> None:
        self.dismiss(None)
