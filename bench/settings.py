# bench/settings.py: the options of one comparison, after the command line is parsed (bench/compare.py).
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """One comparison's options."""

    rounds: int = 3
    duration: int = 2  # seconds per wrk run (wrk takes whole seconds)
    open_duration: float = 2.0  # seconds per open-loop and TTFB run
    rates: tuple[float, ...] = (500.0, 2000.0)
    body_bytes: int = 1024
    warmup: bool = True
    stream_levels: tuple[int, ...] = (500, 1000, 2000, 3000)
    stream_tokens: int = 10
    stream_delay_ms: float = 100.0
    stream_duration: float = 4.0
    stall_ms: float = 200.0
    proxy_cpu: int | None = None
    load_cpu: int | None = None
    loop: str = "uvloop"
    with_litellm: bool = False
    against: str | None = None
    profile_s: float = 0.0
    out: Path = ROOT / "bench" / "results"
    write_md: Path | None = None
    quick: bool = False
    plot: Path | None = None  # where the PNG goes (default: OUT/compare.png when matplotlib is installed)
    progress: bool = False  # a progress bar with the time left, even when stderr is not a terminal
