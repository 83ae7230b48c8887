"""``wenxin bench``: a load generator for streaming chat endpoints, cheap enough never to be the
bottleneck.

Theory of operation
===================

Layers, bottom up (each imports only those below it)::

    _http      sans-I/O HTTP/1.1 response parser (head; chunked / length / close bodies)
    _stats     percentiles (nearest rank), the Collector of measurements, the result model
    _client    asyncio Protocol + keep-alive Connection; per-chunk work in callbacks only
    _recorder  per-stream measurement: SSE → content chunks, TTFT, lateness, gaps, outcome
    _targets   request shapes per target kind (openai, native, ernie-v2, ernie-v1), pacing
    _system    /proc sampling of target processes, fd limits, machine info
    _runner    one run: workers, ramp, warm-up, drain, timeouts, progress → RunResult
    _search    --find-max: exponential growth then bisection, pass/fail criteria
    _svg       tiny SVG line charts;  _report  result.json, report.md, plots

The command line (``wenxin_stream.cli.bench``) parses flags into a
:class:`~._targets.TargetConfig` and a :class:`~._runner.LoadSpec`, runs
:func:`~._runner.run_load` (or :func:`~._search.find_max` over it) on uvloop when installed,
and writes the outputs with :func:`~._report.write_outputs`. See ``docs/BENCH.md``.
"""

from __future__ import annotations

from ._client import BufferSink, Connection, StreamAbort, build_request
from ._http import ChunkedDecoder, HTTPProtocolError, IncompleteResponse, ResponseParser
from ._recorder import NativeRecorder, OpenAIRecorder, Pacing, StreamRecorder, V1Recorder
from ._report import build_document, markdown, write_outputs
from ._runner import LoadRun, LoadSpec, loop_factory, run_load
from ._search import Criteria, FindMaxResult, MaxSearch, Step, find_max
from ._stats import Collector, RunResult, Summary, percentile, summarize
from ._system import ProcSampler, concurrency_cap, machine_info, raise_fd_limit
from ._targets import KINDS, SetupError, Target, TargetConfig, make_target, parse_pacing

__all__ = [
    "KINDS",
    "BufferSink",
    "ChunkedDecoder",
    "Collector",
    "Connection",
    "Criteria",
    "FindMaxResult",
    "HTTPProtocolError",
    "IncompleteResponse",
    "LoadRun",
    "LoadSpec",
    "MaxSearch",
    "NativeRecorder",
    "OpenAIRecorder",
    "Pacing",
    "ProcSampler",
    "ResponseParser",
    "RunResult",
    "SetupError",
    "Step",
    "StreamAbort",
    "StreamRecorder",
    "Summary",
    "Target",
    "TargetConfig",
    "V1Recorder",
    "build_document",
    "build_request",
    "concurrency_cap",
    "find_max",
    "loop_factory",
    "machine_info",
    "make_target",
    "markdown",
    "parse_pacing",
    "percentile",
    "raise_fd_limit",
    "run_load",
    "summarize",
    "write_outputs",
]
