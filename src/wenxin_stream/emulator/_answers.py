"""What the emulator answers: seeded text, scripted scenarios, chunking and token estimates.

Theory of operation
===================

An answer is a pure function of ``(seed, prompt)``: :func:`default_answer` seeds a private
``random.Random`` with both (string seeding is stable across processes, unlike ``hash()``) and
assembles a clearly-labelled offline answer in Chinese — an opening that says it is the
emulator, a brief mention of the question, a few sentences drawn from a fixed pool, then a
body whose shape follows the question (:func:`answer_kind`), so a page or a terminal shows
its real job offline:

- ``code`` (the question says 代码, 示例, 例子, code, example, snippet, 函数 or function): a
  fenced code block with a language tag, a few lines that run;
- ``table`` (对比, 比较, 区别, 差异, vs, versus, compare, difference): a Markdown table
  comparing the things asked about;
- ``long`` (详细, 介绍, 解释, 步骤, 教程, explain, detail, guide, how to, or a question
  of 40 characters or more): headings, a numbered list and a bulleted one;
- ``short`` otherwise: a short numbered list under a bold heading (about 150–400
  characters, the answer of earlier versions).

Every kind ends with a closing line. A matching :class:`~._config.Scenario` replaces the
text. Nothing here is random across runs, so the same prompt and seed always give the same
bytes of content and the same chunk boundaries.

A reasoning model's thinking (:func:`reasoning_text`) is composed the same way from a pool of
thinking sentences: about 220–340 characters (some 140–210 estimated tokens, so that the
smallest ``thinking_budget``, 100, visibly cuts it), labelled as the emulator's.

Chunking follows the two API generations (``ERNIE-PROTOCOL.md`` §1.7, §2.5):

- v1 (:func:`sentence_pieces`): one chunk per sentence, cut after a run of ``。！？；`` or
  newlines (closing quotes and brackets right after stay with the sentence); a sentence
  longer than :data:`MAX_SENTENCE` characters is cut into near-equal parts;
- v2 (:func:`delta_pieces`): small deltas of 2–8 characters, sizes drawn from the seeded RNG;
- a fault ``chunks=N`` overrides both (:func:`even_pieces`, exactly N non-empty pieces; the
  text is lengthened first when it has fewer than N characters, see :func:`lengthen`).

Token usage is estimated, not tokenized, with the package's one rule
(``wenxin_stream._token_estimate``: ``ceil(0.625 × CJK characters + words)``), reported as at
least 1 token. :class:`TokenCounter` computes it incrementally, so running totals per chunk
cost O(chunk) time and O(1) state, and the running total after the last chunk equals the
estimate of the whole text.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import lru_cache

from .._token_estimate import TokenCounter as _EstimateCounter
from .._token_estimate import estimate_text_tokens

OPENING = "【离线模拟】这是 wenxin-stream 本地模拟器的回答，不是真实的文心一言。"
"""The first sentence of every default answer."""

_POOL = (
    "模拟器会把回答切成句子，并按可配置的间隔逐块发送，用来演示流式输出的打字效果。",
    "同样的问题加上同样的随机种子，总会得到同样的回答和同样的分块方式。",
    "如果想测试异常情况，可以通过请求头或消息里的故障指令，让连接中断、卡顿或返回错误码。",
    "真实服务的首字延迟通常在半秒左右，这里的节奏可以随意调快或调慢。",
    "回答里的用量统计是按字符数估算的，并不代表真实的计费结果。",
    "离线模式下不会访问任何网络服务，也不会产生任何费用。",
    "换一个问题试试，看看回答的长度和分块会怎样变化。",
    "这段文字只用于测试客户端、网关和页面渲染，请不要把它当作事实依据。",
    "流式接口的每一块都是一个独立的 JSON 对象，客户端应当按行解析。",
    "第一版接口最后发送一个空的结束块，第二版接口则以 [DONE] 收尾。",
    "中文字符在网络传输中可能被拆到两次读取里，客户端必须先拼好完整的行再解码。",
    "长时间没有数据时，网关应当发送心跳注释，避免负载均衡器断开连接。",
)

_POINTS = (
    "回答内容由随机种子决定，可以重复",
    "分块节奏可以通过参数调整",
    "故障注入通过请求头或消息指令触发",
    "用量按字符数估算",
    "不需要真实的密钥",
    "同时支持第一版和第二版接口",
    "错误码与官方接口保持一致",
)

_THOUGHTS = (
    "先确认问题的关键点，再决定回答的结构。",
    "这个问题不需要实时数据，可以直接根据已有知识回答。",
    "用户可能更关心结论，所以答案要先给结论，再补充理由。",
    "回答应当简短清楚，避免堆砌无关的细节。",
    "需要注意用词准确，必要时给出一个小例子帮助理解。",
    "如果有多个要点，用编号列表会更容易阅读。",
    "检查一下前面的推理有没有遗漏的情况。",
    "也要提醒用户这是离线模拟，不能当作事实依据。",
    "把可能的误解先排除掉，再组织最终的表述。",
    "整体思路已经清楚，可以开始写正式回答了。",
    "先想想用户提问的背景：也许是在学习，也许是在做决定，回答要兼顾这两种情况。",
    "如果问题里有数字或日期，要逐个核对，避免在细节上出错。",
    "有些说法容易引起歧义，最好换一种更直接的表达方式。",
    "还要考虑回答的长度：太短说不清楚，太长又会让人失去耐心。",
)

_CLOSINGS = (
    "祝你测试顺利！",
    "需要可靠答案时，请连接真实的文心一言服务。",
    "以上内容仅供调试使用。",
)

SENTENCE_ENDS = frozenset("。！？；\n")
"""Characters after which a v1 chunk ends."""

_CLOSERS = frozenset("”’」』）)》】")

MAX_SENTENCE = 48
"""A v1 sentence longer than this many characters is cut into smaller chunks."""

_BRIEF = 24


def brief(prompt: str) -> str:
    """The question as the answer mentions it: whitespace collapsed, at most 24 characters."""
    text = " ".join(prompt.split())
    if not text:
        return "（空）"
    return text if len(text) <= _BRIEF else text[:_BRIEF] + "…"


_CACHE_MAX_CHARS = 4096


def default_answer(prompt: str, seed: int) -> str:
    """The emulator's own answer to ``prompt`` (the last user message, directives removed)."""
    if len(prompt) <= _CACHE_MAX_CHARS:
        return _cached_answer(prompt, seed)
    return _compose_answer(prompt, seed)


@lru_cache(maxsize=4096)
def _cached_answer(prompt: str, seed: int) -> str:
    return _compose_answer(prompt, seed)


_CODE_WORDS = ("代码", "示例", "例子", "函数", "code", "example", "snippet", "function")
_TABLE_WORDS = ("对比", "比较", "区别", "差异", " vs", "vs.", "versus", "compare", "difference")
_LONG_WORDS = ("详细", "介绍", "解释", "步骤", "教程", "explain", "detail", "guide", "how to")
_LONG_QUESTION = 40

_SNIPPETS = (
    (
        "python",
        "def stream_words(text, size=4):\n"
        '    """把文本切成小块，模拟流式输出。"""\n'
        "    for start in range(0, len(text), size):\n"
        "        yield text[start:start + size]\n\n"
        'for piece in stream_words("文心一言，逐字输出"):\n'
        '    print(piece, end="", flush=True)\n'
        "print()",
    ),
    (
        "javascript",
        "async function readStream(response) {\n"
        "  const reader = response.body.getReader();\n"
        '  const decoder = new TextDecoder("utf-8");\n'
        "  for (;;) {\n"
        "    const { value, done } = await reader.read();\n"
        "    if (done) break;\n"
        "    console.log(decoder.decode(value, { stream: true }));\n"
        "  }\n"
        "}",
    ),
    (
        "bash",
        "# 用 curl 读取一个流式回答（-N 关闭缓冲）\n"
        "curl -N http://127.0.0.1:8000/v1/chat/completions \\\n"
        '  -H "Content-Type: application/json" \\\n'
        """  -d '{"model": "ernie-lite-8k", "stream": true,"""
        """ "messages": [{"role": "user", "content": "你好"}]}'""",
    ),
)

_ROWS = (
    ("响应方式", "逐块返回", "一次返回"),
    ("首字延迟", "约 0.5 秒", "等待全部生成"),
    ("实现难度", "需要解析事件流", "解析一个 JSON"),
    ("适合场景", "聊天界面", "批量处理"),
    ("出错处理", "可能只收到一部分", "要么成功要么失败"),
)

_STEPS = (
    "确认要解决的问题和预期的结果",
    "准备好凭据和运行环境",
    "先用最小的例子验证思路",
    "逐步加入真实的数据和边界情况",
    "记录结果，回头检查遗漏",
)


def answer_kind(prompt: str) -> str:
    """The shape of the default answer to ``prompt``: code, table, long or short."""
    text = prompt.lower()
    if any(word in text for word in _CODE_WORDS):
        return "code"
    if any(word in text for word in _TABLE_WORDS):
        return "table"
    if any(word in text for word in _LONG_WORDS) or len(prompt.strip()) >= _LONG_QUESTION:
        return "long"
    return "short"


def _body(kind: str, rng: random.Random) -> list[str]:
    if kind == "code":
        lang, code = rng.choice(_SNIPPETS)
        return [
            "\n\n下面是一段模拟的示例代码：\n\n",
            f"```{lang}\n{code}\n```\n\n",
            "这段代码只用于演示页面和终端如何显示代码块。\n\n",
        ]
    if kind == "table":
        rows = rng.sample(_ROWS, 4)
        lines = ["| 方面 | 流式 | 非流式 |\n", "|---|---|---|\n"]
        lines += [f"| {a} | {b} | {c} |\n" for a, b, c in rows]
        return ["\n\n**对比（模拟数据）：**\n\n", *lines, "\n"]
    if kind == "long":
        steps = [_STEPS[i] for i in sorted(rng.sample(range(len(_STEPS)), 4))]
        points = rng.sample(_POINTS, 3)
        return [
            "\n\n## 概述\n\n",
            rng.choice(_POOL),
            "\n\n## 步骤\n\n",
            *(f"{i}. {step}\n" for i, step in enumerate(steps, 1)),
            "\n## 注意事项\n\n",
            *(f"- {point}\n" for point in points),
            "\n",
        ]
    points = rng.sample(_POINTS, 3)
    return [
        "\n\n**要点：**\n\n",
        *(f"{i}. {point}\n" for i, point in enumerate(points, 1)),
        "\n",
    ]


def _compose_answer(prompt: str, seed: int) -> str:
    rng = random.Random(f"wenxin-emulator|{seed}|{prompt}")  # noqa: S311 (seeded on purpose)
    sentences = rng.sample(_POOL, rng.randint(2, 4))
    parts = [
        OPENING,
        f"你的问题是：“{brief(prompt)}”。",
        *sentences,
        *_body(answer_kind(prompt), rng),
        rng.choice(_CLOSINGS),
    ]
    return "".join(parts)


def reasoning_text(prompt: str, seed: int) -> str:
    """The emulator's thinking before it answers ``prompt`` (a pure function of both)."""
    rng = random.Random(f"wenxin-emulator-think|{seed}|{prompt}")  # noqa: S311 (seeded on purpose)
    thoughts = rng.sample(_THOUGHTS, rng.randint(9, 11))
    return "".join(
        [
            "【模拟思考】",
            f"用户问的是“{brief(prompt)}”。",
            *thoughts,
            "好，下面开始回答。",
        ]
    )


def lengthen(text: str, min_chars: int, seed: int) -> str:
    """Append pool sentences to ``text`` until it has at least ``min_chars`` characters."""
    if len(text) >= min_chars:
        return text
    rng = random.Random(f"wenxin-emulator-more|{seed}|{text}")  # noqa: S311 (seeded on purpose)
    parts = [text]
    size = len(text)
    while size < min_chars:
        sentence = rng.choice(_POOL)
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)


def _cut_long(sentence: str) -> list[str]:
    if len(sentence) <= MAX_SENTENCE:
        return [sentence]
    count = -(-len(sentence) // (MAX_SENTENCE // 2 + 8))
    return even_pieces(sentence, count)


def sentence_pieces(text: str) -> tuple[str, ...]:
    """Split ``text`` into v1 chunks: after each run of sentence-ending characters, with long
    sentences cut further. The pieces are non-empty and join back to ``text``."""
    if len(text) <= _CACHE_MAX_CHARS:
        return _cached_sentences(text)
    return _sentences(text)


@lru_cache(maxsize=4096)
def _cached_sentences(text: str) -> tuple[str, ...]:
    return _sentences(text)


def _sentences(text: str) -> tuple[str, ...]:
    pieces: list[str] = []
    start = 0
    index = 0
    length = len(text)
    while index < length:
        if text[index] in SENTENCE_ENDS:
            while index + 1 < length and (
                text[index + 1] in SENTENCE_ENDS or text[index + 1] in _CLOSERS
            ):
                index += 1
            pieces.extend(_cut_long(text[start : index + 1]))
            start = index + 1
        index += 1
    if start < length:
        pieces.extend(_cut_long(text[start:]))
    return tuple(pieces)


def delta_pieces(text: str, seed: int) -> tuple[str, ...]:
    """Split ``text`` into v2 deltas of 2–8 characters (the last may be shorter), with sizes
    drawn from a RNG seeded by ``seed`` and the text."""
    if len(text) <= _CACHE_MAX_CHARS:
        return _cached_deltas(text, seed)
    return _deltas(text, seed)


@lru_cache(maxsize=4096)
def _cached_deltas(text: str, seed: int) -> tuple[str, ...]:
    return _deltas(text, seed)


def _deltas(text: str, seed: int) -> tuple[str, ...]:
    rng = random.Random(f"wenxin-emulator-deltas|{seed}|{text}")  # noqa: S311 (seeded on purpose)
    pieces = []
    start = 0
    while start < len(text):
        end = start + rng.randint(2, 8)
        pieces.append(text[start:end])
        start = end
    return tuple(pieces)


def even_pieces(text: str, count: int) -> list[str]:
    """Split ``text`` into exactly ``count`` pieces of near-equal length (empty pieces only
    when ``text`` has fewer than ``count`` characters)."""
    size, extra = divmod(len(text), count)
    pieces = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


class TokenCounter(_EstimateCounter):
    """The package's running token estimate, reported as at least 1 token (ERNIE never
    reports an answer or a prompt as costing nothing)."""

    __slots__ = ()

    @property
    def total(self) -> int:
        """The estimate so far (at least 1)."""
        return max(1, super().total)


def cut_at_stop(text: str, stop: Iterable[str]) -> str | None:
    """``text`` up to (not including) the earliest stop word, or None if none occurs."""
    best = -1
    for word in stop:
        if word:
            found = text.find(word)
            if found != -1 and (best == -1 or found < best):
                best = found
    return None if best == -1 else text[:best]


def cut_to_tokens(text: str, limit: int) -> str | None:
    """The longest prefix of ``text`` whose estimate is at most ``limit`` tokens, or None when
    the whole text already fits. The estimate never falls as a text grows, so the prefix is
    found by bisection (O(n log n) in C, not a Python loop per character)."""
    if estimate_text_tokens(text) <= limit:
        return None
    low, high = 0, len(text)  # the prefix of length low fits, that of length high does not
    while high - low > 1:
        middle = (low + high) // 2
        if estimate_text_tokens(text[:middle]) <= limit:
            low = middle
        else:
            high = middle
    return text[:low]
