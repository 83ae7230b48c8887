"""Today's ERNIE in the emulator, on the wire: thinking, tools, web search, images, the new
fields and errors, and the faults that reach them (ERNIE-CURRENT.md §8, item by item)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import httpx
import pytest
from emu_helpers import (
    V1_CHAT,
    V2_CHAT,
    bearer,
    events,
    get_token,
    json_events,
    raw_request,
    timed_events,
    v2_body,
)

from servers import emulator
from wenxin_stream._token_estimate import estimate_text_tokens
from wenxin_stream.emulator import ServerHandle
from wenxin_stream.emulator._search import STATUS_TEXT, TOKENS_PER_SOURCE
from wenxin_stream.emulator._v2_answer import TOOLS_PROMPT_TOKENS

QUESTION = "北京今天天气怎么样？"
BOTH = f"{QUESTION} And the stock price of Baidu?"  # matches both tools below
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "获取指定城市的实时天气",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "城市"},
                "date": {"type": "string", "format": "date"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
                "detail": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "where": {
                    "type": "object",
                    "properties": {"lat": {"type": "number"}},
                    "required": ["lat"],
                },
                "optional": {"type": "string"},
            },
            "required": ["location", "date", "unit", "days", "detail", "tags", "where"],
        },
    },
}
STOCK = {
    "type": "function",
    "function": {
        "name": "get_stock_price",
        "description": "Get the latest stock price of a company",
        "parameters": {
            "type": "object",
            "properties": {"symbol": {"type": "string"}},
            "required": ["symbol"],
        },
    },
}


def post(client: httpx.Client, **fields: Any) -> httpx.Response:
    fields.setdefault("model", "ernie-5.1")
    prompt = fields.pop("prompt", QUESTION)
    return client.post(V2_CHAT, json=v2_body(prompt, **fields), headers=bearer())


def chunks(client: httpx.Client, **fields: Any) -> list[dict[str, Any]]:
    response = post(client, stream=True, **fields)
    assert response.status_code == 200, response.text
    assert events(response.content)[-1] == "[DONE]"
    return json_events(response.content)


def deltas(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in stream if c["choices"]]


def text_of(stream: list[dict[str, Any]], key: str = "content") -> str:
    return "".join(d.get(key) or "" for d in deltas(stream))


# --- thinking -----------------------------------------------------------------------------------


def test_a_reasoning_model_thinks_before_it_answers(client: httpx.Client) -> None:
    stream = chunks(client, model="ernie-x1.1", stream_options={"include_usage": True})
    kinds = ["r" if "reasoning_content" in d else "c" for d in deltas(stream)]
    first_answer = kinds.index("c")
    assert first_answer > 5
    assert set(kinds[first_answer:]) == {"c"}  # never interleaved, never sent back
    assert deltas(stream)[0]["role"] == "assistant"
    thought = text_of(stream, "reasoning_content")
    assert thought.startswith("【模拟思考】")
    assert "reasoning_content" not in stream[-1]["choices"][0]["delta"]
    usage = stream[-1]["usage"]
    answer = text_of(stream)
    expected = estimate_text_tokens(thought) + estimate_text_tokens(answer)
    assert usage["completion_tokens"] == expected  # thinking is counted as completion
    assert "completion_tokens_details" not in usage
    whole = post(client, model="ernie-x1.1").json()["choices"][0]["message"]
    assert whole["reasoning_content"] == thought
    assert whole["content"] == answer


def test_thinking_takes_time_at_the_default_pace() -> None:
    with emulator(thinking_interval=0.01) as handle, httpx.Client(base_url=handle.base_url) as c:
        body = v2_body(QUESTION, model="ernie-x1.1", stream=True)
        _, timed = timed_events(c, "POST", V2_CHAT, json=body, headers=bearer())
    thinking = [t for t, data in timed if "reasoning_content" in data]
    assert len(thinking) > 20
    assert thinking[-1] - thinking[0] >= 0.01 * (len(thinking) - 1) * 0.9


@pytest.mark.parametrize(
    ("model", "enable", "thinks"),
    [
        ("ernie-5.1", None, True),  # thinks by default
        ("ernie-5.1", False, False),
        ("ernie-4.5-vl-28b-a3b", None, False),  # hybrid, off by default
        ("ernie-4.5-vl-28b-a3b", True, True),
        ("ernie-4.0-8k", None, False),
    ],
)
def test_enable_thinking_switches_hybrid_models(
    client: httpx.Client, model: str, enable: bool | None, thinks: bool
) -> None:
    fields = {} if enable is None else {"enable_thinking": enable}
    message = post(client, model=model, **fields).json()["choices"][0]["message"]
    assert ("reasoning_content" in message) is thinks


def test_thinking_budget_cuts_the_thinking(client: httpx.Client) -> None:
    full = post(client, model="ernie-x1.1").json()["choices"][0]["message"]
    cut = post(client, model="ernie-x1.1", thinking_budget=100).json()["choices"][0]["message"]
    assert estimate_text_tokens(full["reasoning_content"]) > 100
    assert estimate_text_tokens(cut["reasoning_content"]) <= 100
    assert full["reasoning_content"].startswith(cut["reasoning_content"])
    assert cut["content"] == full["content"]


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"model": "ernie-x1.1", "logprobs": True}, "invalid_argument", "reasoning models reject"),
        ({"model": "ernie-x1.1", "thinking_budget": 99}, "invalid_argument", "at least 100"),
        ({"model": "ernie-x1-turbo-32k", "stop": ["。"]}, "invalid_argument", "stop"),
        ({"model": "ernie-x1-turbo-32k", "seed": 3}, "invalid_argument", "seed"),
        ({"model": "ernie-lite-8k", "max_tokens": 4096}, "invalid_argument", "at most 2048"),
    ],
)
def test_what_reasoning_models_reject(
    client: httpx.Client, fields: dict[str, Any], code: str, text: str
) -> None:
    response = post(client, **fields)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert text in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("ernie-4.0-8k", {"enable_thinking": True, "thinking_budget": 500}),
        ("ernie-x1.1", {"enable_thinking": False}),  # always thinks: the switch is ignored
    ],
)
def test_thinking_switches_only_switch_hybrid_models(
    client: httpx.Client, model: str, fields: dict[str, Any]
) -> None:
    response = post(client, model=model, **fields)
    assert response.status_code == 200
    thought = "reasoning_content" in response.json()["choices"][0]["message"]
    assert thought is (model == "ernie-x1.1")


def test_reasoning_content_in_the_history_is_400(client: httpx.Client) -> None:
    history = [
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！", "reasoning_content": "想了想"},
        {"role": "user", "content": QUESTION},
    ]
    response = post(client, model="ernie-x1.1", messages=history)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_messages"


def test_ignored_fields_and_the_ignore_switch(client: httpx.Client) -> None:
    ok = post(client, model="ernie-x1.1", temperature=0.1, top_p=0.2, frequency_penalty=1.0)
    assert ok.status_code == 200  # accepted and ignored, as Baidu does
    with (
        emulator(unsupported_params="ignore") as handle,
        httpx.Client(base_url=handle.base_url) as c,
    ):
        stopped = post(c, model="ernie-x1-turbo-32k", stop=["。"]).json()
        assert "。" in stopped["choices"][0]["message"]["content"]  # stop was ignored
        thinking = post(c, model="ernie-4.0-8k", enable_thinking=True).json()
        assert "reasoning_content" not in thinking["choices"][0]["message"]


@pytest.mark.parametrize(("switch", "value"), [("empty", ""), ("null", None)])
def test_answer_chunks_can_carry_empty_reasoning(switch: str, value: object) -> None:
    config = {"reasoning_in_answer": switch, "reasoning_tokens_detail": True}
    with emulator(**config) as handle, httpx.Client(base_url=handle.base_url) as c:
        stream = chunks(c, model="ernie-x1.1", stream_options={"include_usage": True})
    answers = [d for d in deltas(stream) if d.get("content")]
    assert answers
    assert all(d["reasoning_content"] == value for d in answers)
    details = stream[-1]["usage"]["completion_tokens_details"]
    assert details["reasoning_tokens"] == estimate_text_tokens(text_of(stream, "reasoning_content"))


def test_running_usage_on_every_chunk_counts_the_thinking(client: httpx.Client) -> None:
    stream = chunks(client, model="ernie-x1.1", stream_options={"chunk_include_usage": True})
    counts = [c["usage"]["completion_tokens"] for c in stream]
    assert counts == sorted(counts)
    assert counts[0] > 0


# --- tools ----------------------------------------------------------------------------------------


def test_a_matching_question_gets_a_tool_call(client: httpx.Client) -> None:
    body = post(client, tools=[WEATHER, STOCK], enable_thinking=False).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == ""
    (call,) = choice["message"]["tool_calls"]
    assert len(call["id"]) == 32
    assert int(call["id"], 16) >= 0
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_current_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert set(arguments) == {"location", "date", "unit", "days", "detail", "tags", "where"}
    assert arguments["location"] == "北京"
    assert arguments["unit"] == "celsius"
    assert arguments["days"] == 1
    assert arguments["detail"] is True
    assert arguments["tags"] == [arguments["tags"][0]]
    assert isinstance(arguments["tags"][0], str)
    assert arguments["where"] == {"lat": 1}
    assert len(arguments["date"]) == 10
    plain = post(client, enable_thinking=False).json()["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens"] == plain + TOOLS_PROMPT_TOKENS


@pytest.mark.parametrize(
    ("choice", "prompt", "names"),
    [
        ("auto", "讲个笑话", []),
        ("none", QUESTION, []),
        ("required", "讲个笑话", ["get_current_weather"]),
        (
            {"type": "function", "function": {"name": "get_stock_price"}},
            QUESTION,
            ["get_stock_price"],
        ),
        (
            "auto",
            BOTH,
            ["get_current_weather", "get_stock_price"],
        ),
    ],
)
def test_tool_choice(client: httpx.Client, choice: Any, prompt: str, names: list[str]) -> None:
    fields = {"tools": [WEATHER, STOCK], "tool_choice": choice, "enable_thinking": False}
    message = post(client, prompt=prompt, **fields).json()["choices"][0]["message"]
    assert [c["function"]["name"] for c in message.get("tool_calls", [])] == names
    if not names:
        assert message["content"]


def test_parallel_tool_calls_false_calls_one(client: httpx.Client) -> None:
    prompt = BOTH
    message = post(client, prompt=prompt, tools=[WEATHER, STOCK], parallel_tool_calls=False).json()[
        "choices"
    ][0]["message"]
    assert len(message["tool_calls"]) == 1


def test_streamed_tool_calls_one_delta_per_call_by_default(client: httpx.Client) -> None:
    prompt = BOTH
    stream = chunks(client, prompt=prompt, tools=[WEATHER, STOCK], enable_thinking=False)
    calls = [d["tool_calls"][0] for d in deltas(stream) if d.get("tool_calls")]
    assert [c["index"] for c in calls] == [0, 1]
    assert all(c["id"] and c["type"] == "function" for c in calls)
    assert all(json.loads(c["function"]["arguments"]) for c in calls)
    last = stream[-1]["choices"][0]
    assert last["finish_reason"] == "tool_calls"
    assert "tool_calls" not in last["delta"]


@pytest.mark.parametrize("how", ["fault", "config"])
def test_tool_call_deltas_without_index_and_with_split_arguments(how: str) -> None:
    config = {"tool_call_index": False, "tool_call_pieces": 4} if how == "config" else {}
    prompt = QUESTION + (" [[wenxin:fault tool_index=0;tool_pieces=4]]" if how == "fault" else "")
    with emulator(**config) as handle, httpx.Client(base_url=handle.base_url) as c:
        stream = chunks(c, prompt=prompt, tools=[WEATHER], enable_thinking=False)
    items = [d["tool_calls"][0] for d in deltas(stream) if d.get("tool_calls")]
    assert len(items) == 4
    assert all("index" not in item for item in items)
    assert items[0]["id"]
    assert items[0]["function"]["name"] == "get_current_weather"
    assert all("id" not in item and "name" not in item["function"] for item in items[1:])
    arguments = json.loads("".join(item["function"]["arguments"] for item in items))
    assert arguments["location"] == "北京"


def test_thinking_comes_before_the_tool_calls(client: httpx.Client) -> None:
    stream = chunks(client, tools=[WEATHER])
    kinds = [
        "r" if "reasoning_content" in d else "t" if "tool_calls" in d else "-"
        for d in deltas(stream)
    ]
    assert kinds[0] == "r"
    assert kinds.index("t") > kinds.index("r")
    assert kinds[-1] == "-"


def test_after_the_tool_results_the_answer_uses_them(client: httpx.Client) -> None:
    first = post(client, tools=[WEATHER, STOCK], prompt=BOTH).json()
    calls = first["choices"][0]["message"]["tool_calls"]
    assert len(calls) == 2
    history = [
        {"role": "user", "content": BOTH},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "123.4"},  # in a row
    ]
    answer = post(client, messages=history, tools=[WEATHER, STOCK]).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    text = answer["message"]["content"]
    assert 'get_current_weather 返回了 {"temp": 21}' in text
    assert "get_stock_price 返回了 123.4" in text
    orphan = [*history[:2], {"role": "tool", "tool_call_id": "nope", "content": "1"}]
    assert post(client, messages=orphan).status_code == 400


def test_tools_for_a_model_without_function_calling_are_refused(client: httpx.Client) -> None:
    response = post(client, model="ernie-char-8k", tools=[WEATHER])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_argument"


def test_v1_functions_get_a_function_call_then_an_answer(client: httpx.Client) -> None:
    token = get_token(client)
    function = WEATHER["function"]
    ask = {"messages": [{"role": "user", "content": QUESTION}], "functions": [function]}
    body = client.post(V1_CHAT, params={"access_token": token}, json=ask).json()
    assert body["result"] == ""
    assert body["finish_reason"] == "function_call"
    call = body["function_call"]
    assert call["name"] == "get_current_weather"
    assert json.loads(call["arguments"])["location"] == "北京"
    assert call["thoughts"]
    stream = client.post(V1_CHAT, params={"access_token": token}, json={**ask, "stream": True})
    parts = json_events(stream.content)
    assert parts[0]["function_call"]["name"] == "get_current_weather"
    assert parts[-1]["is_end"] is True
    assert parts[-1]["finish_reason"] == "function_call"
    then = [
        *ask["messages"],
        {"role": "assistant", "content": "", "function_call": call},
        {"role": "function", "name": "get_current_weather", "content": '{"temp": 21}'},
    ]
    answer = client.post(
        V1_CHAT, params={"access_token": token}, json={"messages": then, "functions": [function]}
    ).json()
    assert 'get_current_weather 返回了 {"temp": 21}' in answer["result"]
    assert "北京今天天气怎么样" in answer["result"]


# --- web search -------------------------------------------------------------------------------


SEARCH = {"enable": True, "enable_citation": True, "enable_trace": True}


def test_search_results_ride_on_the_first_answer_chunk(client: httpx.Client) -> None:
    stream = chunks(
        client,
        web_search=SEARCH,
        enable_thinking=False,
        stream_options={"include_usage": True},
    )
    carriers = [i for i, c in enumerate(stream) if "search_results" in c]
    assert carriers == [0]
    results = stream[0]["search_results"]
    assert [r["index"] for r in results] == [1, 2, 3]
    assert all(r["url"].startswith("https://example.com/") and r["title"] for r in results)
    text = text_of(stream)
    assert "^[1]^" in text
    assert "^[1][2]^" not in text
    assert "^[2][3]^" in text
    split = any(
        "^" in d.get("content", "") and not d["content"].endswith("^") for d in deltas(stream)
    )
    assert split or len(deltas(stream)) > 3
    details = stream[-1]["usage"]["prompt_tokens_details"]
    assert details["search_tokens"] == 3 * TOKENS_PER_SOURCE


def test_search_with_thinking_puts_the_results_after_the_thinking(client: httpx.Client) -> None:
    stream = chunks(client, model="ernie-x1.1", web_search=SEARCH)
    carrier = next(c for c in stream if "search_results" in c)
    assert "content" in carrier["choices"][0]["delta"]
    assert "reasoning_content" not in carrier["choices"][0]["delta"]


@pytest.mark.parametrize(
    ("search", "count", "markers", "trace"),
    [
        ({"enable": True, "search_num": 2, "enable_trace": True}, 2, False, True),
        ({"enable": True, "reference_number": 1, "enable_citation": True}, 1, True, False),
        ({"enable": False, "enable_citation": True, "enable_trace": True}, 0, False, False),
    ],
)
def test_search_switches_and_both_spellings(
    client: httpx.Client, search: dict[str, Any], count: int, markers: bool, trace: bool
) -> None:
    body = post(client, web_search=search, enable_thinking=False).json()
    assert ("^[" in body["choices"][0]["message"]["content"]) is markers
    assert len(body.get("search_results", [])) == (count if trace else 0)
    details = body["usage"].get("prompt_tokens_details", {})
    assert details.get("search_tokens", 0) == count * TOKENS_PER_SOURCE


@pytest.mark.parametrize("placement", ["choice", "delta"])
def test_the_search_status_signal(placement: str) -> None:
    with (
        emulator(search_status_placement=placement) as handle,
        httpx.Client(base_url=handle.base_url) as c,
    ):
        stream = chunks(
            c, web_search={"enable": True, "enable_status": True}, enable_thinking=False
        )
    first = stream[0]["choices"][0]
    where = first if placement == "choice" else first["delta"]
    assert where["delta_tag"] == "search_status"
    assert first["delta"]["content"] == STATUS_TEXT
    assert all("delta_tag" not in c["choices"][0] for c in stream[1:])


@pytest.mark.parametrize(
    ("search", "text"),
    [
        ({"enable": True, "search_mode": "required"}, "forced search"),
        ({"enable": True, "search_num": 3, "search_number": 3}, "same field"),
        ({"enable": True, "search_number": 40}, "[1, 28]"),
    ],
)
def test_search_fields_baidu_refuses(
    client: httpx.Client, search: dict[str, Any], text: str
) -> None:
    response = post(client, web_search=search)
    assert response.status_code == 400
    assert text in response.json()["error"]["message"]


# --- images --------------------------------------------------------------------------------------


def png_url(width: int, height: int, padding: int = 0) -> str:
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + header + b"\0" * (4 + padding)
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_question(url: str) -> list[dict[str, Any]]:
    parts = [
        {"type": "text", "text": "图里是什么？"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return [{"role": "user", "content": parts}]


def test_a_vision_model_describes_the_image(client: httpx.Client) -> None:
    for url, seen in (
        (png_url(640, 480), "PNG 图片（640×480 像素"),
        ("https://example.com/a.jpg", "example.com"),
    ):
        body = post(client, model="ernie-4.5-vl-28b-a3b", messages=image_question(url)).json()
        text = body["choices"][0]["message"]["content"]
        assert "我收到了 1 张图片" in text
        assert seen in text


@pytest.mark.parametrize(
    ("model", "url", "status", "code"),
    [
        ("ernie-5.1", png_url(64, 64), 400, "invalid_messages"),  # not a vision model
        ("ernie-4.5-vl-28b-a3b", png_url(6000, 100), 400, "invalid_image_url"),
        ("ernie-4.5-vl-28b-a3b", png_url(4, 100), 400, "invalid_image_url"),
        ("ernie-4.5-vl-28b-a3b", "file:///etc/passwd", 400, "invalid_image_url"),
    ],
)
def test_images_baidu_refuses(
    client: httpx.Client, model: str, url: str, status: int, code: str
) -> None:
    response = post(client, model=model, messages=image_question(url))
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_an_image_over_ten_megabytes_is_refused(client: httpx.Client) -> None:
    big = png_url(100, 100, padding=10 * 1024 * 1024)
    response = post(client, model="ernie-4.5-vl-28b-a3b", messages=image_question(big))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image_url"
    assert "10 MB" in response.json()["error"]["message"]


# --- other fields, errors and faults -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"seed": 0}, "seed"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"stop": ["1", "2", "3", "4", "5"]}, "stop"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_other_fields_are_checked(client: httpx.Client, fields: dict[str, Any], field: str) -> None:
    response = post(client, model="ernie-4.0-8k", **fields)
    assert response.status_code == 400
    assert field in response.json()["error"]["message"]


def test_max_completion_tokens_wins_over_max_tokens(client: httpx.Client) -> None:
    body = post(client, model="ernie-4.0-8k", max_tokens=200, max_completion_tokens=5).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] <= 5


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [("model_offline", 403, "access_denied"), ("account_overdue", 403, "access_denied")],
)
def test_the_new_error_codes_can_be_injected(
    client: httpx.Client, code: str, status: int, kind: str
) -> None:
    response = post(client, prompt=f"你好 [[wenxin:fault error={code}]]")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == kind
    v1 = client.post(
        V1_CHAT,
        params={"access_token": get_token(client)},
        json={"messages": [{"role": "user", "content": f"你好 [[wenxin:fault error={code}]]"}]},
    ).json()
    assert v1["error_code"] == 336001  # a v2 code has no v1 answer


def test_a_cut_during_the_thinking(emu: ServerHandle) -> None:
    body = v2_body(f"{QUESTION} [[wenxin:fault cut_after=3]]", model="ernie-x1.1", stream=True)
    raw = raw_request(emu.base_url, "POST", V2_CHAT, body, bearer())
    data, complete = raw.body()
    assert not complete  # the chunked body was never terminated
    sent = json_events(data)
    assert len(sent) == 3
    assert all("reasoning_content" in c["choices"][0]["delta"] for c in sent)


def test_an_error_in_the_middle_of_tool_arguments(client: httpx.Client) -> None:
    prompt = f"{QUESTION} [[wenxin:fault tool_pieces=4;error=336100;error_after=2]]"
    response = post(client, prompt=prompt, tools=[WEATHER], enable_thinking=False, stream=True)
    sent = json_events(response.content)
    assert [bool(c.get("choices")) for c in sent] == [True, True, False]
    assert sent[-1]["error"]["code"] == "dispatch_internal_error"
    assert "[DONE]" not in events(response.content)
    partial = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in sent[:2]
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(partial)


def test_thinking_interval_as_a_fault_key(client: httpx.Client) -> None:
    prompt = f"{QUESTION} [[wenxin:fault thinking_interval=0]]"
    assert len(chunks(client, model="ernie-x1.1", prompt=prompt)) > 10


def test_v2_auth_comes_before_the_method(client: httpx.Client) -> None:
    assert client.get(V2_CHAT).status_code == 401
    assert client.get(V2_CHAT).json()["error"]["code"] == "invalid_iam_token"
    assert client.get(V2_CHAT, headers=bearer()).status_code == 405


def test_a_v1_token_as_the_bearer_is_refused(client: httpx.Client) -> None:
    token = get_token(client)
    response = client.post(V2_CHAT, json=v2_body(), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_iam_token"
