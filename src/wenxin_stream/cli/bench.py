"""``wenxin bench``: load-test a streaming chat endpoint and report latency, loss and cost.

Theory of operation
===================

:func:`register` declares the flags (documented in ``docs/BENCH.md``). :func:`run` checks
everything before any load is sent — the URL (loopback only unless ``--allow-remote``; a host
name must resolve to loopback addresses only), the pacing SPEC (validated by the emulator's own
parser), ``--pid``/``--label`` pairs, and the concurrency against the open-file limit, which is
first raised from soft to hard — then runs one load (``--concurrency``) or a search
(``--find-max``) on uvloop unless ``--no-uvloop``, prints progress on stderr (not with
``--quiet``) and the Markdown report on stdout, and writes ``result.json``, ``report.md`` and
the SVG plots with ``--out DIR``. Secrets never reach the outputs: the API key and the values
of ``--header`` fields are left out of the recorded configuration.

Exit status: 0 when at least one stream completed (or find-max found a passing concurrency),
1 otherwise, 2 for bad arguments. The bench package is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import CommandError
from .emulate import is_loopback

if TYPE_CHECKING:
    from ..bench import RunResult, Step

DEFAULT_PACING = "ttft=0.5;interval=0.4;chunks=12"
"""ERNIE-like pacing: half a second to the first chunk, then 12 chunks 400 ms apart."""


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to the ``wenxin`` parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="load-test a streaming chat endpoint (OpenAI-compatible, our server, ERNIE v1/v2)",
        description="Open many concurrent streams and measure TTFT, chunk lateness, loss and "
        "cost. See docs/BENCH.md.",
    )
    t = parser.add_argument_group("target")
    t.add_argument(
        "--url", required=True, help="root URL of the target, e.g. http://127.0.0.1:8000"
    )
    t.add_argument(
        "--target",
        default="openai",
        choices=("openai", "native", "ernie-v2", "ernie-v1"),
        help="request shape (openai)",
    )
    t.add_argument(
        "--api-key", metavar="KEY", help="bearer key (ernie-v1: CLIENT_ID:CLIENT_SECRET)"
    )
    t.add_argument("--model", metavar="NAME", help="model name (ernie-v1: mapped to its endpoint)")
    t.add_argument("--endpoint", metavar="NAME", help="ernie-v1 endpoint name (overrides --model)")
    t.add_argument("--path", help="request path for openai/ernie-v2/ernie-v1 (overrides)")
    t.add_argument(
        "--header", action="append", default=[], metavar="K:V", help="extra header (repeatable)"
    )
    t.add_argument(
        "--question", metavar="TEXT", help="question text (a number is appended to each)"
    )
    t.add_argument(
        "--pacing",
        default=DEFAULT_PACING,
        metavar="SPEC",
        help=f"emulator pacing directive added to each question ({DEFAULT_PACING})",
    )
    t.add_argument("--no-pacing", action="store_true", help="send plain questions")
    t.add_argument(
        "--native-turns",
        metavar="N",
        type=int,
        default=10,
        help="native: questions per conversation (10)",
    )
    t.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host")

    load = parser.add_argument_group("load")
    load.add_argument(
        "--concurrency", metavar="N", type=int, default=10, help="streams open at once (10)"
    )
    load.add_argument(
        "--duration", metavar="S", type=float, default=30.0, help="seconds of load (30)"
    )
    load.add_argument(
        "--requests", metavar="M", type=int, help="run this many streams instead of --duration"
    )
    load.add_argument(
        "--ramp", metavar="S", type=float, default=2.0, help="seconds to start all workers (2)"
    )
    load.add_argument(
        "--warmup", metavar="S", type=float, default=0.0, help="seconds excluded from stats (0)"
    )
    load.add_argument(
        "--drain",
        metavar="S",
        type=float,
        default=30.0,
        help="seconds open streams get at the end (30)",
    )
    load.add_argument(
        "--time-limit",
        metavar="S",
        type=float,
        default=3600.0,
        help="hard cap of one run in seconds (3600)",
    )
    load.add_argument(
        "--connect-timeout", metavar="S", type=float, default=10.0, help="seconds to connect (10)"
    )
    load.add_argument(
        "--ttft-timeout", metavar="S", type=float, default=60.0, help="seconds to content (60)"
    )
    load.add_argument(
        "--idle-timeout", metavar="S", type=float, default=30.0, help="seconds of silence (30)"
    )

    fm = parser.add_argument_group("find-max")
    fm.add_argument("--find-max", action="store_true", help="search the largest concurrency")
    fm.add_argument(
        "--start-concurrency", metavar="N", type=int, default=100, help="first step (100)"
    )
    fm.add_argument(
        "--max-concurrency", metavar="N", type=int, default=20000, help="search limit (20000)"
    )
    fm.add_argument(
        "--step-duration", metavar="S", type=float, default=15.0, help="seconds per step (15)"
    )
    fm.add_argument(
        "--max-p99-lateness-ms", metavar="MS", type=float, default=50.0, help="criterion (50)"
    )
    fm.add_argument("--max-error-rate", metavar="R", type=float, default=0.0, help="criterion (0)")
    fm.add_argument(
        "--resolution",
        metavar="F",
        type=float,
        default=0.05,
        help="stop bisecting within this fraction (0.05)",
    )
    fm.add_argument(
        "--max-p99-ttft-ms",
        metavar="MS",
        type=float,
        default=None,
        help="criterion on time to first token (off)",
    )
    fm.add_argument(
        "--confirm-failures",
        metavar="K",
        type=int,
        default=1,
        help="re-run a failing step up to K times before accepting the failure (1)",
    )
    fm.add_argument("--max-steps", metavar="K", type=int, default=24, help="most steps (24)")

    obs = parser.add_argument_group("observe and output")
    obs.add_argument(
        "--pid",
        metavar="PID",
        type=int,
        action="append",
        default=[],
        help="sample this process (repeatable)",
    )
    obs.add_argument(
        "--label", metavar="NAME", action="append", default=[], help="name of the matching --pid"
    )
    obs.add_argument("--out", metavar="DIR", help="write result.json, report.md and plots here")
    obs.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    obs.add_argument("--no-uvloop", action="store_true", help="use the plain asyncio loop")
    parser.set_defaults(handler=run)


def _check_host(host: str, port: int, allow_remote: bool) -> None:
    if allow_remote or is_loopback(host):
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CommandError(f"cannot resolve {host!r}: {exc}", 2) from None
    if not all(is_loopback(str(info[4][0])) for info in infos):
        raise CommandError(
            f"refusing to load non-loopback host {host!r}; pass --allow-remote if you mean it", 2
        )


def _check_numbers(args: argparse.Namespace) -> None:
    positive = {
        "--connect-timeout": args.connect_timeout,
        "--ttft-timeout": args.ttft_timeout,
        "--idle-timeout": args.idle_timeout,
        "--step-duration": args.step_duration,
        "--start-concurrency": args.start_concurrency,
        "--max-concurrency": args.max_concurrency,
        "--max-steps": args.max_steps,
        "--max-p99-lateness-ms": args.max_p99_lateness_ms,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise CommandError(f"{flag} must be positive", 2)
    if not 0 <= args.max_error_rate <= 1 or args.resolution < 0:
        raise CommandError("--max-error-rate must be in [0, 1] and --resolution ≥ 0", 2)


def _headers(values: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        name, colon, text = value.partition(":")
        if not colon or not name.strip():
            raise CommandError(f"--header {value!r} must look like NAME:VALUE", 2)
        out.append((name.strip(), text.strip()))
    return tuple(out)


def _config_record(args: argparse.Namespace, pacing: str | None) -> dict[str, Any]:
    """The configuration as recorded in result.json (no secrets)."""
    record = {
        k: v
        for k, v in vars(args).items()
        if k not in ("handler", "api_key", "header", "pacing", "no_pacing")
    }
    record["api_key"] = "(set)" if args.api_key else None
    record["header_names"] = [h.partition(":")[0].strip() for h in args.header]
    record["pacing"] = pacing
    return record


def _step_line(step: Step) -> str:
    r = step.result
    late = r.lateness_ms
    p50 = f"{late.p50:.1f}" if late.p50 is not None else "-"
    p99 = f"{late.p99:.1f}" if late.p99 is not None else "-"
    return (
        f"step: concurrency {step.concurrency:6d}{' again' if step.attempt else ''}  "
        f"{'pass' if step.passed else 'FAIL'}  "
        f"completed {r.streams_completed:7d}  failed {r.streams_failed:5d}  "
        f"lost {r.chunks_lost:5d}  late p50 {p50} ms p99 {p99} ms  "
        f"client cpu {r.client.cpu_percent:.0f}%  {'; '.join(step.violations)}"
        + ("  ⚠ upstream behind schedule" if r.upstream_behind else "")
    )


def _warn_saturated(result: RunResult, err: Any) -> None:
    why = result.client.starved_or_saturated
    if why:
        print(f"wenxin bench: warning: {why}; results may be bounded by the client", file=err)
    if result.upstream_behind:
        print(f"wenxin bench: warning: {result.upstream_behind}", file=err)


def run(args: argparse.Namespace) -> int:
    """Run ``wenxin bench``; the exit status."""
    from .. import __version__
    from ..bench import (
        Criteria,
        LoadSpec,
        MaxSearch,
        ProcSampler,
        SetupError,
        TargetConfig,
        build_document,
        concurrency_cap,
        find_max,
        loop_factory,
        machine_info,
        make_target,
        markdown,
        parse_pacing,
        raise_fd_limit,
        run_load,
        write_outputs,
    )
    from ..bench._targets import DEFAULT_QUESTION, Endpoint

    try:
        endpoint = Endpoint.parse(args.url)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    _check_host(endpoint.host, endpoint.port, args.allow_remote)
    try:
        pacing = None if args.no_pacing else parse_pacing(args.pacing)
    except ValueError as exc:
        raise CommandError(f"--pacing: {exc}", 2) from None
    _check_numbers(args)
    if len(args.label) > len(args.pid):
        raise CommandError("more --label than --pid values", 2)
    labels = args.label + [f"pid {pid}" for pid in args.pid[len(args.label) :]]
    config = TargetConfig(
        kind=args.target,
        url=args.url,
        api_key=args.api_key,
        model=args.model,
        endpoint=args.endpoint,
        path=args.path,
        headers=_headers(args.header),
        question=args.question or DEFAULT_QUESTION,
        pacing=pacing,
        native_turns=max(1, args.native_turns),
        request_timeout=args.connect_timeout + args.ttft_timeout,
    )
    try:
        target = make_target(config)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    raise_fd_limit()
    cap, cap_reason = concurrency_cap()
    limit = min(args.max_concurrency, cap)
    if not args.find_max and args.concurrency > cap:
        raise CommandError(f"--concurrency {args.concurrency} exceeds the {cap_reason}: {cap}", 2)

    def spec(concurrency: int, duration: float) -> LoadSpec:
        return LoadSpec(
            concurrency=concurrency,
            duration=duration,
            requests=None if args.find_max else args.requests,
            ramp=args.ramp,
            warmup=args.warmup,
            drain=args.drain,
            time_limit=args.time_limit,
            connect_timeout=args.connect_timeout,
            ttft_timeout=args.ttft_timeout,
            idle_timeout=args.idle_timeout,
        )

    try:
        first = spec(
            args.start_concurrency if args.find_max else args.concurrency,
            args.step_duration if args.find_max else args.duration,
        )
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    err = sys.stderr
    progress = None if args.quiet else err
    samplers = [ProcSampler(pid, label) for pid, label in zip(args.pid, labels, strict=True)]
    factory, loop_name = loop_factory(not args.no_uvloop)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    search_result = None

    async def main() -> RunResult | None:
        nonlocal search_result
        if not args.find_max:
            return await run_load(
                target, first, samplers=samplers, progress=progress, event_loop=loop_name
            )

        async def run_at(concurrency: int) -> RunResult:
            if progress is not None:
                print(f"find-max: running {concurrency} streams", file=progress, flush=True)
            return await run_load(
                target,
                spec(concurrency, args.step_duration),
                samplers=samplers,
                progress=progress,
                event_loop=loop_name,
            )

        search = MaxSearch(
            args.start_concurrency, limit, resolution=args.resolution, max_steps=args.max_steps
        )
        criteria = Criteria(
            args.max_p99_lateness_ms, args.max_error_rate, max_p99_ttft_ms=args.max_p99_ttft_ms
        )
        search_result = await find_max(
            run_at,
            search,
            criteria,
            limit_reason=cap_reason if cap < args.max_concurrency else "--max-concurrency",
            on_step=lambda step: print(_step_line(step), file=err, flush=True),
            confirm_failures=max(0, args.confirm_failures),
        )
        passing = [s for s in search_result.steps if s.passed]
        best = max(passing, key=lambda s: s.concurrency) if passing else None
        return best.result if best else None

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(main())
    except SetupError as exc:
        raise CommandError(f"target setup failed: {exc}", 1) from None
    except KeyboardInterrupt:
        raise CommandError("interrupted", 130) from None
    if result is not None:
        _warn_saturated(result, err)
    doc = build_document(
        version=__version__,
        started_at=started_at,
        config=_config_record(args, pacing.spec if pacing else None),
        machine=machine_info(loop_name),
        run=result,
        search=search_result,
    )
    if args.out:
        paths = write_outputs(Path(args.out), doc)
        print(markdown(doc, [p.name for p in paths if p.suffix == ".svg"]))
        print(f"wrote {', '.join(str(p) for p in paths)}", file=err)
    else:
        print(markdown(doc))
    return 0 if result is not None and result.streams_completed > 0 else 1
