"""Drive the official ``openai`` SDK for the chaos suite; started once by test_chaos.py.

Runs inside ``.venv-peers``, so it imports nothing of ours. Reads one JSON request a line on
stdin — ``{"base_url", "model", "content", "stream"}`` — and answers each with one JSON line
on stdout: the text received, the ``finish_reason`` values seen, and the exception the SDK
raised (its class, HTTP status, error code and ``Retry-After``), if any. The SDK's retries are
off (``max_retries=0``): the suite counts what one request gets.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai


def drive(request: dict[str, Any]) -> dict[str, Any]:
    client = openai.OpenAI(
        base_url=request["base_url"], api_key="anything-in-dev-mode", max_retries=0, timeout=30
    )
    messages: Any = [{"role": "user", "content": request["content"]}]
    out: dict[str, Any] = {"text": "", "reasoning": "", "finishes": [], "error": None}
    try:
        if request["stream"]:
            stream = client.chat.completions.create(
                model=request["model"], messages=messages, stream=True
            )
            for chunk in stream:
                for choice in chunk.choices:
                    out["text"] += choice.delta.content or ""
                    # ERNIE's (and DeepSeek's) field: an extra the SDK keeps on the delta
                    out["reasoning"] += getattr(choice.delta, "reasoning_content", None) or ""
                    if choice.finish_reason is not None:
                        out["finishes"].append(choice.finish_reason)
        else:
            completion = client.chat.completions.create(model=request["model"], messages=messages)
            out["text"] = completion.choices[0].message.content or ""
            out["finishes"].append(completion.choices[0].finish_reason)
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        out["error"] = {
            "class": type(exc).__name__,
            "status": exc.status_code,
            "code": exc.code or body.get("code"),
            "retry_after": exc.response.headers.get("retry-after"),
        }
    except openai.APIError as exc:  # an error event inside a stream, or a broken connection
        body = exc.body if isinstance(exc.body, dict) else {}
        out["error"] = {
            "class": type(exc).__name__,
            "status": None,
            "code": exc.code or body.get("code"),
            "retry_after": None,
        }
    finally:
        client.close()
    return out


def main() -> None:
    for line in sys.stdin:
        print(json.dumps(drive(json.loads(line)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
