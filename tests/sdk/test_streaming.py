"""The happy path through both twins and both API generations: events in order, text, the
final message against the non-stream answer, usage, end reason, timing, ``create()``."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from sdk_helpers import Emu, Factory, MakeEach, fault, unique

from wenxin_stream import (
    AsyncClient,
    ChatResult,
    ChunkMeta,
    EndReason,
    FinishEvent,
    FinishReason,
    TextDelta,
    UsageEvent,
)

PROMPT = "请介绍一下长城"


async def test_events_come_in_order(make: Factory) -> None:
    h = make()
    out = await h.stream(PROMPT)
    out.raise_error()
    kinds = [type(e) for e in out.events]
    assert kinds[0] is ChunkMeta
    assert kinds[-2:] == [FinishEvent, UsageEvent]
    assert kinds.count(FinishEvent) == 1
    assert kinds.count(UsageEvent) == 1
    assert kinds.count(TextDelta) >= 2
    # every TextDelta belongs to a chunk that announced itself first
    first_text = kinds.index(TextDelta)
    assert ChunkMeta in kinds[:first_text]
    assert TextDelta not in kinds[kinds.index(FinishEvent) :]
    metas = out.of(ChunkMeta)
    assert all(m.id.startswith("as-") for m in metas)
    if h.api == "v1":
        assert [m.sentence_id for m in metas] == list(range(len(metas)))
    else:
        assert all(m.model == h.client.model for m in metas)


async def test_final_message_equals_the_non_stream_answer(make: Factory) -> None:
    h = make()
    reference = await h.create(PROMPT)
    out = await h.stream(PROMPT)
    out.raise_error()
    assert out.end_reason is EndReason.COMPLETED
    assert out.delivered == out.text == out.result.content == reference.content
    assert "\ufffd" not in out.text
    assert out.result.finish_reason is reference.finish_reason is FinishReason.STOP
    assert out.result.usage == reference.usage
    assert out.result.usage is not None
    assert out.result.usage.total_tokens > 0
    assert out.stream.usage == reference.usage
    assert out.of(FinishEvent)[0].reason is FinishReason.STOP
    assert out.result.id.startswith("as-")
    assert reference.id.startswith("as-")


async def test_text_stream_yields_only_text(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    client = h.client
    if isinstance(client, AsyncClient):
        async with client.chat.stream(messages=PROMPT) as astream:
            pieces = [piece async for piece in astream.text_stream]
        final, end = await astream.get_final_message(), astream.end_reason
    else:

        def run() -> tuple[list[str], ChatResult, EndReason | None]:
            with client.chat.stream(messages=PROMPT) as stream:
                texts = list(stream.text_stream)
            return texts, stream.get_final_message(), stream.end_reason

        pieces, final, end = await h.call(run)
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == reference
    assert final.content == reference
    assert final.usage is not None
    assert end is EndReason.COMPLETED


async def test_stream_chat_convenience(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    client = h.client
    if isinstance(client, AsyncClient):
        pieces = [p async for p in client.stream_chat(PROMPT)]
    else:
        pieces = await h.call(lambda: list(client.stream_chat(PROMPT)))
    assert "".join(pieces) == reference


async def test_create_returns_a_whole_answer(make: Factory) -> None:
    h = make()
    result = await h.create([{"role": "user", "content": PROMPT}])
    assert len(result.content) >= 150
    assert result.content.startswith("【离线模拟】")
    assert result.finish_reason is FinishReason.STOP
    assert result.usage is not None
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert len(h.wire.chat()) == 1


async def test_answers_are_deterministic_across_twins_and_apis(make: Factory) -> None:
    first = await make().stream(PROMPT)
    second = await make().stream(PROMPT)
    assert first.text == second.text
    assert first.result.usage == second.result.usage


async def test_time_to_first_token_and_pacing(make_each: MakeEach) -> None:
    group = make_each()
    message = fault(PROMPT, "ttft=0.25;interval=0.06;chunks=5")
    outs = await asyncio.gather(*(h.stream(message) for h in group))
    for h, out in zip(group, outs, strict=True):
        out.raise_error()
        assert len(out.texts) == 5, h.label
        ttft = out.time_to_first_token
        assert ttft is not None, h.label
        # no upper bound in seconds (a loaded machine delays any of it): the time to the
        # FIRST token, so at least the four intervals before the last one arrived
        assert ttft >= 0.24, h.label
        assert out.elapsed >= ttft + 4 * 0.06 - 0.02, h.label
        # each chunk is handed on when it arrives, not held until the end: the gaps are the
        # emulator's pacing. A stall of this process (a loaded machine) may hand two chunks on
        # together once, so one short gap is allowed; a client that buffers has several
        text_times = [t for t, e in zip(out.times, out.events, strict=True) if type(e) is TextDelta]
        gaps = [b - a for a, b in itertools.pairwise(text_times)]
        assert sum(gap < 0.04 for gap in gaps) <= 1, (h.label, gaps)
        assert text_times[0] < text_times[-1] - 0.18, h.label


async def test_time_to_first_token_counts_from_the_request(make_each: MakeEach) -> None:
    """Creating a stream and iterating it later: the wait before iterating is not "time to
    first token" (the request is sent only when the iteration begins)."""
    group = make_each()
    message = fault(PROMPT, "ttft=0.05")
    outs = await asyncio.gather(*(h.stream(message, delay_start=0.4) for h in group))
    for h, out in zip(group, outs, strict=True):
        out.raise_error()
        assert out.time_to_first_token is not None
        assert 0.04 <= out.time_to_first_token < 0.35, h.label
        assert out.elapsed < 0.35 + 0.3, h.label


@pytest.mark.parametrize("n", [1, 7])
async def test_chunks_gives_exactly_n_text_deltas(make: Factory, n: int) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    out = await h.stream(fault(PROMPT, f"chunks={n}"))
    out.raise_error()
    assert len(out.texts) == n
    if n > 1:
        assert all(out.texts)
    # lengthened only if the answer had fewer characters than chunks: not the case here
    assert out.text == reference
    assert out.end_reason is EndReason.COMPLETED


async def test_many_streams_share_one_client(make: Factory) -> None:
    h = make()
    reference = (await h.create(PROMPT)).content
    if isinstance(h.client, AsyncClient):
        outs = await asyncio.gather(*(h.stream(PROMPT) for _ in range(8)))
    else:
        outs = [await h.stream(PROMPT) for _ in range(3)]
    assert all(o.error is None and o.text == reference for o in outs)


async def test_client_repr_names_api_and_auth(make: Factory) -> None:
    h = make()
    text = repr(h.client)
    assert h.api in text
    assert ("V1OAuth" if h.api == "v1" else "V2Bearer") in text


@pytest.mark.parametrize("api", ["v1", "v2"])
async def test_iam_credentials(make: Factory, sdk_emu: Emu, api: str) -> None:
    """IAM keys: v1 signs every request (bce-auth-v1), v2 mints a bearer token once."""
    h = make(
        api=api,
        api_key=None,
        secret_key=None,
        bearer_token=None,
        access_key=unique("iam-ak-"),
        secret_access_key=unique("iam-sk-"),
        iam_base_url=sdk_emu.base_url,
        base_url=sdk_emu.base_url,
        v2_base_url=sdk_emu.base_url,
    )
    assert h.api == api
    reference = (await h.create(PROMPT)).content
    out = await h.stream(PROMPT)
    out.raise_error()
    assert out.text == reference
    authorizations = [s.request.headers["Authorization"] for s in h.wire.chat()]
    if api == "v1":
        assert all(a.startswith("bce-auth-v1/") for a in authorizations)
        assert h.wire.mints() == []
    else:
        assert all(a.startswith("Bearer ") for a in authorizations)
        assert len(h.wire.mints()) == 1
