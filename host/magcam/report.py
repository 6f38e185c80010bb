"""How commands talk to people and scripts: rich on a terminal, plain lines in a pipe,
one JSON object per line with ``--json``.

Usage::

    out = Reporter(json_mode=False)
    out.info("capturing 1024x768")
    out.event({"type": "encoder", "t": 120, "count": 5, "lens": 505})
    out.result({"dng": "demo/demo_0001.dng"})
"""

from __future__ import annotations

import json
import sys


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n``): a device's log text must not
    clear the screen, colour it or break one event into two lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _plain(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):  # as --json writes them
        return "true" if value else "false"
    return printable(str(value))


def _fields(ev: dict, prefix: str = ""):
    """``key=value`` pairs; a nested dict (a link event's ``device`` and ``host`` counters) as
    ``device.rx_frames=...``, not as a Python repr."""
    for k, v in ev.items():
        if isinstance(v, dict):
            yield from _fields(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}={_plain(v)}"


def _fmt(ev: dict) -> str:
    body = " ".join(_fields({k: v for k, v in ev.items() if k not in ("type", "t")}))
    t = ev.get("t")
    return f"{'' if t is None else f'{t:>8} ms '}{ev.get('type', '?'):<8} {body}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


class Reporter:
    def __init__(self, json_mode: bool = False, stream=None):
        self.json = json_mode
        self.stream = stream or sys.stdout
        self.console = None  # a rich console only on a real terminal that can move the cursor
        if not json_mode and _isatty(self.stream):
            from rich.console import Console

            console = Console(file=self.stream)
            if not console.is_dumb_terminal:  # TERM=dumb: plain lines
                self.console = console

    def _line(self, text: str, style: str | None = None) -> None:
        if self.console:
            self.console.print(text, style=style, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def _json(self, obj: dict) -> None:
        print(json.dumps(obj, separators=(",", ":")), file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if self.json:
            self._json({"type": "info", "message": text})
        else:
            self._line(text, "bold")

    def event(self, ev: dict) -> None:
        if self.json:
            self._json(ev)
        else:
            self._line(_fmt(ev), "red" if ev.get("type") == "fault" else None)

    def result(self, obj: dict) -> None:
        if self.json:
            self._json({"type": "result", **obj})
        else:
            for k, v in obj.items():
                self._line(f"{k}: {v}", "green")

    def error(self, text: str, **fields) -> None:
        """One line on stderr; with --json an ``error`` event, with ``fields`` (e.g. the
        ``input`` of a batch it is about) beside the message."""
        if self.json:
            self._json({"type": "error", "message": text, **fields})
        else:
            print(f"error: {text}", file=sys.stderr, flush=True)
