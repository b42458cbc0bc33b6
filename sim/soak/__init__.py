# sim/soak: `python -m sim --soak MINUTES`, a bounded soak test of the gateway.
#
# What runs. Two mock providers and one gateway (sim/stack.py), and, in this process, one event
# loop with clients of seven kinds side by side, each paced at its own rate over its own
# keep-alive connections: OpenAI chat non-streamed (`chat`) and streamed (`chat_stream`), both
# with prompts never seen before; the same at temperature 0 over a small fixed set of prompts
# that the cache answers (`cached`, `cached_stream`, both modes of the same prompts, so hits are
# replayed across modes); Anthropic `/v1/messages` non-streamed and streamed (translated by the
# gateway to the OpenAI-format mocks); and `abort`, a raw-socket client that leaves early on
# purpose. Mocks stream one token per millisecond, so an abort after the first bytes lands
# mid-stream.
#
# Faults. Only the preferred provider (`local-fast`, the cheaper and faster one) misbehaves;
# `cloud-pricier` stays healthy throughout, and the gateway may try 3 routes per request, so every
# fault can be hidden from clients unless it strikes after the response head went out: every
# request a 500; half of them a 429 and 30% a 503 (with Retry-After); a 200 ms stall (under the
# 0.5 s attempt deadline: slow, then answered); a 1.2 s stall (over it: the gateway must give up
# and fall back, well within the clients' 15 s); pooled connections closed by the provider after
# 20 ms idle (the gateway must retry a request that met a dead pooled connection); and two
# mid-stream faults: streams cut after 3 tokens, or ended by the provider's own error event.
#
# Verdict (exit 1 on any failure, each check with its figures in the report): no request lost,
# the gateway's RSS, fds and pools within their bounds at rest, keep-alive closes only where
# announced or excused, the gateway up to the end, exiting 0 on SIGTERM with no ERROR line or
# traceback in its log, and every kind, fault and cache hit seen.
#
# One job per module, in the order a run uses them:
#   mix        the providers, the router settings, the kinds of clients and their request bytes
#   schedule   the faults and their windows
#   answers    reading a response off the socket and judging its body
#   clients    the clients on the wire (keep-alive requests, planned aborts, control calls)
#   verdicts   one Result per request, one verdict each, tallies (the Ledger)
#   growth     RSS, fds and pools at rest, their bounds, the gateway log's problems
#   report     the report, its checks and verdict, and its text form
#   runner     the run itself: phases, fault driver, sampler, settling; `run()`
from __future__ import annotations

from sim.soak.report import format_text
from sim.soak.runner import SoakError, run

__all__ = ["SoakError", "format_text", "run"]
