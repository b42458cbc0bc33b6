# proxy/cache/formats.py: the client API formats the cache knows, as opaque byte tags.
#
# A tag names the *client-facing* API surface of an exchange. It is part of the cache key, so an entry
# is only ever served back in the format it was stored in, and no cross-format translation happens in
# the cache. Nothing here does I/O.
from __future__ import annotations

OPENAI_CHAT = b"openai.chat"  # POST /v1/chat/completions
ANTHROPIC_MESSAGES = b"anthropic.messages"  # POST /v1/messages
OPENAI_EMBEDDINGS = b"openai.embeddings"  # POST /v1/embeddings (never streamed)

# Every format the cache knows.
KNOWN = frozenset((OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_EMBEDDINGS))
