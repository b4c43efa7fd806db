"""A plain-text table that draws only the lines on screen (Textual's Line API).

Textual's DataTable measures and stores every cell of every row when rows are added, which
took the better part of a second for 2,000 sessions on a small machine: too slow to rebuild
on each keystroke of a filter. This table keeps the rows as tuples of strings, works out the
column widths with `len`, and renders the 40-odd visible lines on demand, so replacing all
its rows costs about as much as building the list.

Without colour it stays readable: the header is the first line, the selected row is in
reverse video and marked with ">".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gateway.tui.model import printable

Row = tuple[str, tuple[str, ...]]
_GAP = "  "


class Table(ScrollView, can_focus=True):
    """Rows of text with a cursor; the header stays on top while the rows scroll."""

    DEFAULT_CSS = """
    Table {
        height: 1fr;
        background: $surface;
    }
    Table > .table--header {
        text-style: bold;
        background: $panel;
    }
    Table > .table--cursor {
        text-style: reverse;
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"table--header", "table--cursor"}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "open", "Details"),
    ]

    class Opened(Message):
        """Enter on a row."""

        def __init__(self, table: Table, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

    def __init__(self, columns: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.labels = tuple(columns)
        self.rows: list[Row] = []
        self.placeholder = ""  # shown instead of rows while there are none
        self.index: dict[str, int] = {}
        self.cursor = 0
        self._widths = [cell_len(label) for label in self.labels]
        self._header = self._format(self.labels)

    # --- data -----------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        return [key for key, _ in self.rows]

    def row(self, key: str) -> tuple[str, ...]:
        return self.rows[self.index[key]][1]

    @property
    def selected(self) -> str | None:
        if not self.rows:
            return None
        return self.rows[self.cursor][0]

    def set_columns(self, columns: Sequence[str]) -> None:
        """Other columns (another view): the rows go until the next set_rows."""
        self.labels = tuple(columns)
        self._widths = [cell_len(label) for label in self.labels]
        self._header = self._format(self.labels)
        self.rows = []
        self.index = {}
        self.cursor = 0
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def set_placeholder(self, text: str) -> None:
        if text != self.placeholder:
            self.placeholder = text
            self.refresh()

    def set_rows(self, rows: list[Row], select: str | None = None) -> None:
        """Show these rows; the cursor goes to `select` if given, else it stays on the
        same key while that is still there."""
        selected = self.selected
        if rows == self.rows and (select is None or select == selected):
            return
        if select is not None:
            selected = select
        self.rows = rows
        self.index = {key: n for n, (key, _) in enumerate(rows)}
        widths = [cell_len(label) for label in self.labels]
        for _, cells in rows:
            for n, cell in enumerate(cells):
                # len, not cell_len: ids and numbers are ASCII, and the loop runs for every
                # cell of every row; wide characters only cost a column of misalignment.
                if len(cell) > widths[n]:
                    widths[n] = len(cell)
        self._widths = widths
        self._header = self._format(self.labels)
        self.virtual_size = Size(sum(widths) + len(_GAP) * len(widths) + 1, len(rows) + 1)
        if selected is not None and selected in self.index:
            self.cursor = self.index[selected]
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self._keep_cursor_visible()
        self.refresh()

    # --- drawing --------------------------------------------------------------------------

    def _format(self, cells: Sequence[str]) -> str:
        return _GAP.join(
            cell.ljust(width) for cell, width in zip(cells, self._widths, strict=False)
        )

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("table--header")
            text = " " + self._header
        else:
            index = scroll_y + y - 1
            if index >= len(self.rows):
                if index == 0 and self.placeholder:
                    text = " " + printable(self.placeholder)
                    strip = Strip([Segment(text, base)], cell_len(text))
                    return strip.crop(0, width).extend_cell_length(width, base)
                return Strip.blank(width, base)
            text = self._format(self.rows[index][1])
            if index == self.cursor:
                style = base + self.get_component_rich_style("table--cursor")
                text = ">" + text
            else:
                style = base
                text = " " + text
        # Here, on the few lines on screen, rather than on every cell when rows are set.
        text = printable(text)
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop(scroll_x, scroll_x + width).extend_cell_length(width, style)

    # --- cursor ---------------------------------------------------------------------------

    def move_to(self, index: int) -> None:
        if not self.rows:
            return
        index = max(0, min(index, len(self.rows) - 1))
        if index == self.cursor:
            return
        self.cursor = index
        self._keep_cursor_visible()
        self.refresh()

    def select(self, key: str) -> bool:
        if key not in self.index:
            return False
        self.move_to(self.index[key])
        return True

    def _keep_cursor_visible(self) -> None:
        visible = max(1, self.size.height - 1 - (1 if self.show_horizontal_scrollbar else 0))
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        self.move_to(len(self.rows) - 1 if where < 0 else 0)

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.Opened(self, self.selected))

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self.move_to(self.scroll_offset.y + event.y - 1)

    def on_resize(self) -> None:
        self._keep_cursor_visible()
