"""Property tests of the request head and body handling: any bytes a client sends, cut anywhere.

The gateway runs on the unit tests' fake loop (no sockets), so a few hundred examples cost well
under a second each. The same properties run for as long as wanted with
`python -m tests.fuzz.request_path --minutes N`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.fuzz.driver import check_outcome, check_same_answers, h11_messages, run
from tests.fuzz.strategies import request_stream, splits

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = draw(request_stream())
    return data, draw(splits(data))


@SETTINGS
@given(case=stream_and_cuts())
def test_any_input_gets_valid_4xx_or_success_answers_and_bounded_state(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    check_outcome(run(data, cuts))


@SETTINGS
@given(case=stream_and_cuts())
def test_answers_do_not_depend_on_how_the_bytes_were_cut(case: tuple[bytes, list[int]]) -> None:
    data, cuts = case
    assume(b"/stats" not in data and b"/metrics" not in data)  # live counters and uptime: never the same twice
    check_same_answers(run(data), run(data, cuts))


@SETTINGS
@given(data=request_stream())
def test_message_boundaries_agree_with_an_independent_parser(data: bytes) -> None:
    """Where both the gateway and h11 accept the same requests, they agree on each one's method,
    target and body: no byte can be a body to one and a new request to the other (smuggling)."""
    ours = run(data, stub=True).handled
    theirs = h11_messages(data)
    both = min(len(ours), len(theirs))
    assert ours[:both] == theirs[:both]


@SETTINGS
@given(data=st.binary(max_size=2000), cuts=st.lists(st.integers(0, 2000), max_size=6))
def test_random_bytes(data: bytes, cuts: list[int]) -> None:
    check_outcome(run(data, cuts))
