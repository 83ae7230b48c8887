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


class _LinesOnly(SSEDecoder):
    """The decoder without its one-event shortcut: every chunk through the line splitter."""

    __slots__ = ()

    def _one_event(self, data: bytes) -> None:
        return None


FRAMES = st.lists(
    st.sampled_from([
        b'data: {"a":"\xe4\xb8\xad"}\n\n', b"data: x\n\n", b"data: \n\n", b"data: \xff\xe4\xb8\n\n",
        b"data:x\n\n", b"data: a\nb\n\n", b"data: a\r\n\r\n", b"data: a\n\r\n", b"data: a\n",
        b"\n", b"event: e\n", b"retry: 9\n", b"id: i\n", b"id: \0\n", b": c\n",
        b"\xef\xbb\xbfdata: b\n\n", b"data: \xe4", b"\xb8\xad\n\n", b"data: " + b"y" * 40 + b"\n\n",
        b"\r", b"\ndata: z\n\n", b"data: a\r\n\n", b"data: a\rb\n\n",
    ]),
    max_size=20,
)  # fmt: skip


def _outcome(
    decoder: SSEDecoder, chunks: list[bytes]
) -> tuple[list[tuple[str, str, str, int | None]], str | None, str, int | None, bool]:
    events = []
    error = None
    try:
        for chunk in chunks:
            events += decoder.feed(chunk)
        events += decoder.close()
    except SSELimitError as exc:
        error = str(exc)
    seen = [(e.data, e.event, e.id, e.retry) for e in events]
    return seen, error, decoder.last_event_id, decoder.retry, decoder.truncated


@fuzz
@given(FRAMES, st.integers(0, 64))
def test_the_one_event_shortcut_decodes_as_the_line_splitter(
    frames: list[bytes], limit: int
) -> None:
    # one frame per feed (the shortcut's case), and with limits that bite or not
    for limits in ({}, {"max_line_bytes": limit, "max_event_bytes": limit}):
        assert _outcome(SSEDecoder(**limits), frames) == _outcome(_LinesOnly(**limits), frames)


Y40 = b"data: " + b"y" * 40 + b"\n\n"  # a 46-byte line, 40 bytes of data


@pytest.mark.parametrize(
    ("frames", "limits"),
    [
        ([b"id: i\n", b"data: x\n\n"], {}),
        ([b"retry: 9\n", b"data: x\n\n"], {}),
        ([b"event: e\n", b"data: x\n\n"], {}),
        ([b"data: a\n", b"data: b\n\n"], {}),
        ([b"da", b"ta: x\n\n"], {}),
        ([b"data: x\r", b"\ndata: y\n\n"], {}),
        ([b"data: a\r\n\n"], {}),
        ([b"data: a\rb\n\n"], {}),
        ([b"data: a\nb"], {}),
        ([b"\xef\xbb\xbfdata: b\n\n"], {}),
        ([Y40], {"max_line_bytes": 45}),
        ([Y40], {"max_line_bytes": 46}),
        ([Y40], {"max_event_bytes": 39}),
        ([Y40], {"max_event_bytes": 40}),
    ],
)
def test_the_one_event_shortcut_decodes_as_the_line_splitter_at_its_edges(
    frames: list[bytes], limits: dict[str, int]
) -> None:
    assert _outcome(SSEDecoder(**limits), frames) == _outcome(_LinesOnly(**limits), frames)


def test_the_one_event_shortcut_is_taken_for_a_lone_data_event() -> None:
    decoder = _LinesOnly()
    decoder.feed(b"data: x\n\n")  # the BOM question settled
    assert decoder._one_event(b"data: y\n\n") is None
    taken = SSEDecoder()
    taken.feed(b"data: x\n\n")
    assert [e.data for e in taken._one_event(b"data: y\n\n") or []] == ["y"]
    assert taken._one_event(b"data: y\n\ndata: z\n\n") is None
