"""What the CLI prints cannot drive the operator's terminal.

Tickets, alerts, findings, dead letters and span attributes come from outside. Printed raw,
`ESC ] 0;…` retitles the window, `ESC [2J` clears the screen, a BiDi override (U+202E) shows
text in another order than it is, a C1 control (U+009B) is a CSI on terminals that read
them. `escape` turns each such character into its visible `\\x1b` / `\\u202e` form; tab and
newline stay.

Every renderer prints through one `SafeConsole`: it escapes the text of every segment rich
renders (tables, panels, live status lines alike), while rich's own styling and cursor
control, which it produces itself, pass as they are; links are dropped, since the only ones
would come from markup inside data, and text whose brackets are no valid markup (a ticket
titled `[/x]`) is shown as it is rather than stopping the command. JSON lines are written by
`json_line`: JSON already escapes C0, and this escapes DEL, C1 and BiDi controls too (as `\\u`
escapes, so a JSON reader gets the same strings). `SafeFormatter` does the same for log lines.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.errors import MarkupError
from rich.segment import Segment
from rich.text import Text

from counterpoint.infra.safe_text import SafeFormatter, escape, json_line

__all__ = ["SafeConsole", "SafeFormatter", "escape", "json_line"]


class SafeConsole(Console):
    """A rich Console whose output carries no control characters from the data it shows."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        try:
            return super().render_str(text, **kwargs)
        except MarkupError:  # brackets from data, not markup of ours
            return super().render_str(text, **{**kwargs, "markup": False})

    def render(self, renderable: RenderableType,
               options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control:  # rich's own cursor movements for live displays
                yield segment
                continue
            style = segment.style
            if style is not None and style.link:
                style = style.update_link(None)
            yield Segment(escape(segment.text), style)
