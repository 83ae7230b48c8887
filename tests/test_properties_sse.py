"""Properties of the SSE codec (``_sse.py``), the first parser of every byte from the network.

- Any stream the encoder writes decodes to the events written, however it is cut into chunks.
- Any bytes at all, cut anywhere, decode to the same events as in one piece, and the decoder
  raises nothing but its typed limit error.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_settings import cut, fuzz
from wenxin_stream import SSEDecoder, SSELimitError, encode_event

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r\n"),
    min_size=1,
    max_size=10,
)
EVENTS = st.lists(
    st.tuples(TEXT, st.none() | NAME, st.none() | NAME.filter(lambda s: "\0" not in s)),
    max_size=8,
)


def _decode(chunks: list[bytes], **limits: int) -> list[tuple[str, str, str]]:
    decoder = SSEDecoder(**limits)
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.close()
    return [(e.event, e.data, e.id) for e in events]


@fuzz
@given(EVENTS, st.lists(st.integers(min_value=0), max_size=20))
def test_an_encoded_stream_decodes_to_its_events_however_it_is_cut(
    written: list[tuple[str, str | None, str | None]], points: list[int]
) -> None:
    wire = b"".join(encode_event(data, event=event, id=id_) for data, event, id_ in written)
    got = _decode(cut(wire, points))
    sent = [
        (data.replace("\r\n", "\n").replace("\r", "\n"), event or "message")
        for data, event, _ in written
    ]
    assert sent == [(data, event) for event, data, _ in got]


@fuzz
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=20))
def test_any_bytes_decode_the_same_in_any_chunks(data: bytes, points: list[int]) -> None:
    assert _decode(cut(data, points)) == _decode([data])
    assert _decode([bytes([b]) for b in data]) == _decode([data])


SSE_BYTES = st.lists(
    st.sampled_from([b"data: ", b"data", b":", b"id: x", b"event: e", b"retry: 9", b"\r",
                     b"\n", b"\r\n", "中文".encode(), b"\xe4\xb8", b"\xff", b"\xef\xbb\xbf",
                     b"x" * 40, b"\0"]),
    max_size=60,
).map(b"".join)  # fmt: skip


@fuzz
@given(SSE_BYTES, st.lists(st.integers(min_value=0), max_size=20), st.integers(0, 64))
def test_any_bytes_raise_nothing_but_the_limit_error(
    data: bytes, points: list[int], limit: int
) -> None:
    decoder = SSEDecoder(max_line_bytes=limit, max_event_bytes=limit)
    failed = False
    for chunk in [*cut(data, points), None]:
        try:
            decoder.feed(chunk) if chunk is not None else decoder.close()
        except SSELimitError:  # a WenxinError: the only thing it may raise
            failed = True
            break
    if failed:  # and it stays failed
        with pytest.raises(SSELimitError):
            decoder.feed(b"")
