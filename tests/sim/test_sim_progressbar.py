"""sim/progressbar.py: the bar's line, the time left, and what it writes to a terminal and to a file."""
from __future__ import annotations

import io

from sim.progressbar import ProgressBar, clock, render, wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_says_the_share_and_the_time_left() -> None:
    assert render("[soak]", 0.25, 15.0, "soak", width=8) == "[soak] [##......]  25%  45s left  soak"
    assert render("[x]", 0.0, 3.0, width=4) == "[x] [....]   0%  time left unknown"
    assert render("[x]", 1.7, 3.0, width=4) == "[x] [####] 100%  0s left"  # a late run is never past 100%
    assert [clock(s) for s in (0.4, 59, 61, 3599, 3725)] == ["0s", "59s", "1m01s", "59m59s", "1h02m"]


def test_on_a_terminal_it_redraws_in_place_and_gets_out_of_the_way() -> None:
    out = Terminal()
    bar = ProgressBar("[sim]", True, out)
    bar.update(0.5, 1.0)
    bar.say("[sim] a line of its own")
    bar.update(1.0, 2.0)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\r\x1b[K[sim] [")
    line_at = text.index("[sim] a line of its own\n")
    assert text[line_at - 4 : line_at] == "\r\x1b[K"  # the bar was cleared before the line...
    assert text[line_at:].count("50%") == 1  # ...and drawn again after it
    assert text.endswith("\r\x1b[K")  # closed: nothing left on the line


def test_into_a_file_it_writes_whole_lines_at_most_once_per_interval() -> None:
    out = io.StringIO()
    bar = ProgressBar("[bench]", True, out, every_s=3600.0)
    for i in range(5):
        bar.update(i / 10, float(i))
    bar.update(1.0, 9.0)  # the end is always written
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].endswith("time left unknown") and lines[1].startswith("[bench] [") and "100%" in lines[1]


def test_off_it_writes_nothing() -> None:
    out = Terminal()
    bar = ProgressBar("[sim]", False, out)
    bar.update(0.5, 1.0)
    bar.close()
    assert out.getvalue() == ""
    assert wanted(False, stream=Terminal()) and wanted(True, stream=io.StringIO())
    assert not wanted(False, stream=io.StringIO()) and not wanted(True, quiet=True, stream=Terminal())
