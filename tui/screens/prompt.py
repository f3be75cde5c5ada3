"""A text prompt whose answer is checked before the dialog closes: one line (an Input,
Enter applies) or several (a TextArea: Enter starts a new line, ctrl+s applies)."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static, TextArea

# check(value) -> (result, None) when valid, or (None, "one sentence saying what is wrong")
Check = Callable[[str], "tuple[object, str | None]"]

# ctrl+s, not ctrl+enter: most terminals send ctrl+enter as a plain Enter (a new line).
APPLY_KEY = "ctrl+s"


class PromptScreen(ModalScreen[object]):
    """Dismisses with check(value)'s result, or None on Escape. An invalid answer keeps
    the dialog open, says why under the input and in a notification."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding(APPLY_KEY, "apply", "Apply", show=False)]

    def __init__(self, title: str, help_text: str, value: str, check: Check,
                 placeholder: str = "", multiline: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.help_text = help_text
        self.value = value
        self.check = check
        self.placeholder = placeholder
        self.multiline = multiline

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.help_text, classes="dialog-help", markup=False)
            if self.multiline:
                yield TextArea(self.value, soft_wrap=True, tab_behavior="focus",
                               placeholder=self.placeholder, id="prompt-text")
                # What Textual's TextArea offers to clear it (its F7 and Ctrl+U bindings).
                hint = ("Enter: new line · Ctrl+S: apply · Escape: cancel\n"
                        "F7 selects all (type to replace it, Backspace clears it) · "
                        "Ctrl+U clears to the line start")
            else:
                yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
                hint = "Enter to apply · Escape to cancel"
            yield Static("", id="prompt-error", markup=False)
            yield Static(hint, classes="dialog-hint")

    @property
    def editor(self) -> Input | TextArea:
        return self.query_one(TextArea if self.multiline else Input)

    def on_mount(self) -> None:
        editor = self.editor
        editor.focus()
        if isinstance(editor, TextArea):
            editor.move_cursor(editor.document.end)  # to add to the text, as an Input does

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply(event.value)

    def action_apply(self) -> None:
        editor = self.editor
        self.apply(editor.text if isinstance(editor, TextArea) else editor.value)

    def apply(self, value: str) -> None:
        result, error = self.check(value)
        if error is not None:
            self.query_one("#prompt-error", Static).update(error)
            self.notify(error, title=self.title_text, severity="error")
            return
        self.dismiss(result)

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_one("#prompt-error", Static).update("")

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        self.query_one("#prompt-error", Static).update("")

    def action_cancel(self) -> None:
        self.dismiss(None)
