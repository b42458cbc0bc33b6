"""The request-path fuzz harness, for runs longer than CI: `python -m tests.fuzz.request_path --minutes 5`.

It runs the same properties as `tests/fuzz/test_*.py`, round after round with fresh seeds, until
the time is up, and stops at the first failure with the falsifying example (already shrunk by
Hypothesis) and the seed that reproduces it. Properties:

  head     any request stream, cut into any reads: valid framing, no 5xx, nothing after a close,
           bounded queue and body (fake loop, no sockets: thousands of examples a second)
  split    the answers do not depend on how the bytes were cut
  h11      message boundaries agree with h11 wherever both accept (request smuggling)
  random   random bytes
  streams  both stream translators against hostile SSE
  e2e      (with --e2e) request streams over real sockets to a real gateway on uvloop with a mock
           provider: no 5xx, valid framing, and the gateway keeps serving and holds no connection

Exit status: 0 when every round passed, 1 at the first failure.
"""

from __future__ import annotations

import argparse
import itertools
import random
import socket
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.driver import LIMITS, _Responses, check_outcome, check_same_answers, h11_messages, run
from tests.fuzz.strategies import ANTHROPIC_EVENTS, OPENAI_EVENTS, request_stream, splits, sse_stream
from tests.fuzz.test_streams import _translate, check_anthropic_output, check_openai_output

STATS: Counter[str] = Counter()


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(request_stream())
    return data, draw(splits(data))


def prop_head(case: tuple[bytes, list[int]]) -> None:
    out = run(*case)
    check_outcome(out)
    STATS.update(str(r.status) for r in out.responses)


def prop_split(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    if b"/stats" in data or b"/metrics" in data:
        return
    check_same_answers(run(data), run(data, cuts))


def prop_h11(data: bytes) -> None:
    ours, theirs = run(data, stub=True).handled, h11_messages(data)
    both = min(len(ours), len(theirs))
    STATS[f"h11-agreed-{both}"] += 1
    assert ours[:both] == theirs[:both]


def prop_random(data: bytes, cuts: list[int]) -> None:
    check_outcome(run(data, cuts))


def prop_streams(a2o: bytes, o2a: bytes, cuts: list[int]) -> None:
    from proxy.translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream

    check_openai_output(_translate(AnthropicToOpenAIStream("m", include_usage=True, created=1, chunk_id="c"), a2o, cuts))
    check_anthropic_output(_translate(OpenAIToAnthropicStream("m", message_id="msg_1"), o2a, cuts))


PROPERTIES: dict[str, tuple[Callable[..., None], dict[str, st.SearchStrategy[Any]]]] = {
    "head": (prop_head, {"case": stream_and_cuts()}),
    "split": (prop_split, {"case": stream_and_cuts()}),
    "h11": (prop_h11, {"data": request_stream()}),
    "random": (prop_random, {"data": st.binary(max_size=4000), "cuts": st.lists(st.integers(0, 4000), max_size=8)}),
    "streams": (prop_streams, {"a2o": sse_stream(ANTHROPIC_EVENTS), "o2a": sse_stream(OPENAI_EVENTS),
                               "cuts": st.lists(st.integers(0, 3000), max_size=8)}),
}  # fmt: skip


# End to end: real sockets, real gateway


class EndToEnd:
    """A gateway on uvloop with a mock provider, both in a background loop thread."""

    def __init__(self) -> None:
        from mocks.config import MockConfig
        from mocks.server import start_mock
        from tests.harness import LoopThread, start_gateway

        self.io = LoopThread("uvloop")
        self.mock = self.io.run(start_mock(MockConfig()))
        table = {
            "server": {**LIMITS, "header_timeout_s": 0.3, "body_timeout_s": 0.3, "keepalive_timeout_s": 0.3},
            "providers": [{"name": "local", "kind": "local", "base_url": f"http://127.0.0.1:{self.mock.port}/v1"}],
            "models": [{"name": "fast", "routes": [{"provider": "local", "model": "m"}]}],
        }
        self.gw = start_gateway(self.io, table)

    def exchange(self, data: bytes, cuts: list[int]) -> bytes:
        edges = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=2.0) as sock:
            try:
                for a, b in itertools.pairwise(edges):
                    sock.sendall(data[a:b])
            except (BrokenPipeError, ConnectionResetError):
                pass
            sock.settimeout(0.1)
            got = bytearray()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    piece = sock.recv(65536)
                except TimeoutError:
                    break  # quiet: the gateway waits for more (its own deadlines are tested elsewhere)
                except ConnectionResetError:
                    break
                if not piece:
                    break
                got += piece
            return bytes(got)

    def prop(self, case: tuple[bytes, list[int]]) -> None:
        written = self.exchange(*case)
        parsed = _Responses()
        parsed.feed(written)
        assert parsed.error is None, f"invalid HTTP from the gateway: {parsed.error}: {written[:300]!r}"
        for resp in parsed.items:
            STATS[f"e2e-{resp.status}"] += 1
            assert resp.status < 500, f"a {resp.status} for client input: {resp.body[:200]!r}"
        assert not self.io.errors, f"unhandled exceptions on the gateway's loop: {self.io.errors}"

    def check_healthy(self) -> None:
        from tests.harness import raw_exchange, wait_for

        assert b"200 OK" in raw_exchange(self.gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        gateway = self.gw.gateway
        assert wait_for(lambda: self.io.call(lambda: len(gateway.connections)) == 0, 3.0), "client connections leaked"
        pool = gateway.pools[0]
        assert wait_for(lambda: self.io.call(lambda: pool.open == pool.idle_count and pool.open >= 0), 3.0), repr(pool)

    def close(self) -> None:
        self.gw.stop()
        self.io.run(self.mock.close())
        self.io.stop()


def run_round(name: str, fn: Callable[..., None], strategies: dict[str, Any], examples: int, round_seed: int) -> None:
    test = seed(round_seed)(
        settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
            given(**strategies)(fn)
        )
    )
    test()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.request_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to run (default: %(default)s)")
    parser.add_argument("--examples", type=int, default=500, help="examples per property per round")
    parser.add_argument("--seed", type=int, default=None, help="first round's seed (default: random)")
    parser.add_argument("--only", action="append", choices=[*PROPERTIES, "e2e"], help="run only these properties")
    parser.add_argument("--e2e", action="store_true", help="also fuzz a real gateway over sockets")
    args = parser.parse_args(argv)
    names = args.only or [*PROPERTIES, *(["e2e"] if args.e2e else [])]
    e2e = EndToEnd() if "e2e" in names else None
    deadline = time.monotonic() + args.minutes * 60
    base = args.seed if args.seed is not None else random.randrange(2**32)
    rounds = 0
    try:
        while time.monotonic() < deadline:
            for name in names:
                round_seed = base + rounds
                started = time.monotonic()
                try:
                    if name == "e2e":
                        assert e2e is not None
                        run_round(name, e2e.prop, {"case": stream_and_cuts()}, max(20, args.examples // 10), round_seed)
                        e2e.check_healthy()
                    else:
                        fn, strategies = PROPERTIES[name]
                        run_round(name, fn, strategies, args.examples, round_seed)
                except Exception as exc:  # noqa: BLE001 (report any failure with how to reproduce it)
                    print(f"\nFAILED {name} (round {rounds}):", file=sys.stderr)
                    traceback.print_exception(exc, limit=-3, file=sys.stderr)  # with Hypothesis' falsifying example
                    print(f"reproduce: python -m tests.fuzz.request_path --only {name} --seed {round_seed} --minutes 0.1",
                          file=sys.stderr)  # fmt: skip
                    return 1
                print(f"round {rounds:4d} {name:8s} seed {round_seed} ok in {time.monotonic() - started:5.1f}s", flush=True)
                if time.monotonic() >= deadline:
                    break
            rounds += 1
    finally:
        if e2e is not None:
            e2e.close()
    print("statuses and agreements seen:", dict(sorted(STATS.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
