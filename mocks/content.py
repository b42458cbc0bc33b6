# Deterministic "model output" for the mocks: reply tokens, usage counts, tool arguments, embeddings.
#
# Rules: everything is a pure function of the prompt text, so the same prompt always gets the same
# answer and different prompts get (almost surely) different ones. The prompt text is the system
# text and the text of every message, joined by newlines; the OpenAI and Anthropic modules extract
# it so that a faithfully translated request gets the *same* reply words from either mock. Usage:
# prompt tokens = ceil(prompt UTF-8 bytes / 4), at least 1; completion tokens = tokens emitted.
# Nothing here does I/O.

from __future__ import annotations

import random
import re
import struct
from typing import Any

import xxhash

WORDS: tuple[str, ...] = (
    "alpha",
    "amber",
    "anchor",
    "apple",
    "arrow",
    "autumn",
    "badge",
    "bamboo",
    "beacon",
    "birch",
    "bloom",
    "breeze",
    "bridge",
    "cabin",
    "canyon",
    "cedar",
    "cloud",
    "comet",
    "coral",
    "crystal",
    "delta",
    "desert",
    "dune",
    "echo",
    "ember",
    "falcon",
    "fern",
    "field",
    "flame",
    "forest",
    "glacier",
    "granite",
    "harbor",
    "hazel",
    "island",
    "ivory",
    "jade",
    "lagoon",
    "lantern",
    "maple",
    "meadow",
    "mesa",
    "meteor",
    "mist",
    "moss",
    "nebula",
    "oasis",
    "ocean",
    "orbit",
    "pebble",
    "pine",
    "prairie",
    "quartz",
    "raven",
    "reef",
    "ridge",
    "river",
    "saffron",
    "shadow",
    "sierra",
    "spruce",
    "summit",
    "thunder",
    "willow",
)
_FIRST = tuple(w.capitalize() for w in WORDS)
_NEXT = tuple(" " + w for w in WORDS)
_N = len(WORDS)
_MASK = (1 << 64) - 1
_WORD_RE = re.compile(r"[^\W\d_]{2,}")
_PLACEHOLDER_LIKE = "@" * 8


def prompt_seed(text: str) -> int:
    """A 64-bit seed for `text`: the xxh3 hash of its UTF-8 bytes."""
    return xxhash.xxh3_64_intdigest(text.encode())


def prompt_tokens(text: str) -> int:
    """Prompt usage for `text`: ceil(UTF-8 bytes / 4), at least 1."""
    return max(1, (len(text.encode()) + 3) // 4)


def reply_tokens(seed: int, n: int) -> list[str]:
    """`n` tokens of reply text for `seed`; shorter replies are prefixes of longer ones.

    Tokens are words from `WORDS`: the first capitalised, the rest with a leading space.
    """
    out: list[str] = []
    x = seed & _MASK
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & _MASK  # 64-bit LCG (Knuth MMIX)
        w = (x >> 33) % _N
        out.append(_NEXT[w] if i else _FIRST[w])
    return out


def argument_word(text: str, seed: int) -> str:
    """The word a tool call is about: the last word (2+ letters) of `text`, or one from `WORDS`."""
    words = _WORD_RE.findall(text)
    return words[-1] if words else WORDS[seed % _N]


def fragments(s: str, size: int = 8) -> list[str]:
    """`s` cut into pieces of `size` characters, as streamed tool-argument deltas."""
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def first_parameter(schema: Any) -> str:
    """The argument a mock tool call fills: the schema's first required property, else its first one."""
    if isinstance(schema, dict):
        required = schema.get("required")
        if isinstance(required, list) and required and isinstance(required[0], str):
            return required[0]
        props = schema.get("properties")
        if isinstance(props, dict) and props:
            return str(next(iter(props)))
    return "input"


def safe(s: str) -> str:
    """`s`, made unable to collide with the wire placeholders (echoed model and tool names)."""
    return s.replace("@", "_") if _PLACEHOLDER_LIKE in s else s


def embedding(key: bytes, dims: int) -> bytes:
    """A unit-length vector of `dims` float32 values for `key`, as little-endian bytes.

    Float answers decode these same bytes, so both encodings give identical numbers.
    """
    rng = random.Random(xxhash.xxh3_64_intdigest(key))
    vec = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return struct.pack(f"<{dims}f", *[v / norm for v in vec])


def floats(packed: bytes) -> list[float]:
    """The float32 LE values in `packed`."""
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))
