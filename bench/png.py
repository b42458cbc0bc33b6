# bench/png.py: a tiny RGB raster with lines, boxes and bitmap text, written out as a PNG.
#
# Why not matplotlib: the comparison needs one plot, and matplotlib (with numpy, pillow and friends,
# tens of MB) would be the heaviest dependency of the project, pulled into CI for the smoke test.
# This is ~250 lines of stdlib (zlib + struct): an 8-bit RGB canvas, thick lines, filled boxes, and a
# 5x7 pixel font (ASCII letters, digits, a little punctuation, µ and ×; drawn for this file) scaled up.
# PNG: signature, IHDR, one IDAT (zlib of filter-0 scanlines), IEND, each chunk with its CRC-32.
from __future__ import annotations

import struct
import zlib

Color = tuple[int, int, int]

# Each glyph: 8 rows of 5 columns ('#' on); row 7 is for descenders.
_GLYPHS_SRC = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###. .....",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###. .....",
    "2": ".###. #...# ....# ...#. ..#.. .#... ##### .....",
    "3": "####. ....# ....# .###. ....# ....# ####. .....",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#. .....",
    "5": "##### #.... ####. ....# ....# #...# .###. .....",
    "6": "..##. .#... #.... ####. #...# #...# .###. .....",
    "7": "##### ....# ...#. ..#.. .#... .#... .#... .....",
    "8": ".###. #...# #...# .###. #...# #...# .###. .....",
    "9": ".###. #...# #...# .#### ....# ...#. .##.. .....",
    "A": ".###. #...# #...# ##### #...# #...# #...# .....",
    "B": "####. #...# #...# ####. #...# #...# ####. .....",
    "C": ".###. #...# #.... #.... #.... #...# .###. .....",
    "D": "###.. #..#. #...# #...# #...# #..#. ###.. .....",
    "E": "##### #.... #.... ####. #.... #.... ##### .....",
    "F": "##### #.... #.... ####. #.... #.... #.... .....",
    "G": ".###. #...# #.... #.### #...# #...# .#### .....",
    "H": "#...# #...# #...# ##### #...# #...# #...# .....",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##.. .....",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...# .....",
    "L": "#.... #.... #.... #.... #.... #.... ##### .....",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...# .....",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...# .....",
    "O": ".###. #...# #...# #...# #...# #...# .###. .....",
    "P": "####. #...# #...# ####. #.... #.... #.... .....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.# .....",
    "R": "####. #...# #...# ####. #.#.. #..#. #...# .....",
    "S": ".#### #.... #.... .###. ....# ....# ####. .....",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. .....",
    "U": "#...# #...# #...# #...# #...# #...# .###. .....",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#.. .....",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#. .....",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...# .....",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.. .....",
    "Z": "##### ....# ...#. ..#.. .#... #.... ##### .....",
    "a": "..... ..... .###. ....# .#### #...# .#### .....",
    "b": "#.... #.... ####. #...# #...# #...# ####. .....",
    "c": "..... ..... .#### #.... #.... #.... .#### .....",
    "d": "....# ....# .#### #...# #...# #...# .#### .....",
    "e": "..... ..... .###. #...# ##### #.... .###. .....",
    "f": "..##. .#... ####. .#... .#... .#... .#... .....",
    "g": "..... ..... .#### #...# #...# .#### ....# .###.",
    "h": "#.... #.... ####. #...# #...# #...# #...# .....",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###. .....",
    "j": "...#. ..... ..##. ...#. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#. .....",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....",
    "m": "..... ..... ##.#. #.#.# #.#.# #.#.# #...# .....",
    "n": "..... ..... ####. #...# #...# #...# #...# .....",
    "o": "..... ..... .###. #...# #...# #...# .###. .....",
    "p": "..... ..... ####. #...# #...# ####. #.... #....",
    "q": "..... ..... .#### #...# #...# .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #.... .....",
    "s": "..... ..... .#### #.... .###. ....# ####. .....",
    "t": ".#... .#... ####. .#... .#... .#..# ..##. .....",
    "u": "..... ..... #...# #...# #...# #..## .##.# .....",
    "v": "..... ..... #...# #...# #...# .#.#. ..#.. .....",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#. .....",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...# .....",
    "y": "..... ..... #...# #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... ##### .....",
    " ": "..... ..... ..... ..... ..... ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##.. .....",
    ",": "..... ..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. ..... .....",
    "-": "..... ..... ..... ##### ..... ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. ..... .....",
    "/": "....# ....# ...#. ..#.. .#... #.... #.... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#. .....",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#... .....",
    "[": ".###. .#... .#... .#... .#... .#... .###. .....",
    "]": ".###. ...#. ...#. ...#. ...#. ...#. .###. .....",
    "%": "##..# ##..# ...#. ..#.. .#... #..## #..## .....",
    "=": "..... ..... ##### ..... ##### ..... ..... .....",
    "_": "..... ..... ..... ..... ..... ..... ##### .....",
    "'": "..#.. ..#.. ..... ..... ..... ..... ..... .....",
    "@": ".###. #...# #.### #.#.# #.### #.... .###. .....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#.. .....",
    "×": "..... #...# .#.#. ..#.. .#.#. #...# ..... .....",
    "µ": "..... ..... #...# #...# #...# ##..# #.##. #....",
}
GLYPHS = {ch: [[c == "#" for c in row] for row in src.split()] for ch, src in _GLYPHS_SRC.items()}
GLYPH_W, GLYPH_H = 5, 8


class Canvas:
    """An RGB image in a bytearray, origin at the top left."""

    __slots__ = ("height", "pixels", "width")

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        """Set one pixel (ignored outside the canvas)."""
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def box(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle [x0, x1] × [y0, y1] (inclusive, clipped)."""
        x0, x1 = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height - 1, max(y0, y1))
        if x0 > x1 or y0 > y1:
            return
        row = bytes(color) * (x1 - x0 + 1)
        for y in range(y0, y1 + 1):
            i = (y * self.width + x0) * 3
            self.pixels[i : i + len(row)] = row

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 1, dash: int = 0) -> None:
        """A straight line `width` pixels thick; with `dash`, drawn `dash` pixels on, `dash` off."""
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        half = width // 2
        for i in range(steps + 1):
            if dash and (i // dash) % 2:
                continue
            t = i / steps
            x = round(x0 + (x1 - x0) * t)
            y = round(y0 + (y1 - y0) * t)
            if width == 1:
                self.dot(x, y, color)
            else:
                self.box(x - half, y - half, x - half + width - 1, y - half + width - 1, color)

    def text(self, x: int, y: int, s: str, color: Color, scale: int = 2, anchor: str = "left") -> int:
        """Draw `s` with its top at `y`; `anchor` left, center or right of `x`. Returns the width."""
        advance = (GLYPH_W + 1) * scale
        width = len(s) * advance - scale
        if anchor == "center":
            x -= width // 2
        elif anchor == "right":
            x -= width
        for ch in s:
            glyph = GLYPHS.get(ch) or GLYPHS["?"]
            for gy, row in enumerate(glyph):
                for gx, on in enumerate(row):
                    if on:
                        self.box(x + gx * scale, y + gy * scale, x + gx * scale + scale - 1, y + gy * scale + scale - 1, color)
            x += advance
        return width

    def png(self) -> bytes:
        """The image as PNG bytes (8-bit RGB, no interlace)."""
        stride = self.width * 3
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height))
        return b"".join((
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)),
            _chunk(b"IDAT", zlib.compress(raw, 9)),
            _chunk(b"IEND", b""),
        ))  # fmt: skip


def text_width(s: str, scale: int = 2) -> int:
    """Width in pixels of `s` drawn at `scale`."""
    return len(s) * (GLYPH_W + 1) * scale - scale


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def read_png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; raises ValueError if `data` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height
