"""schemathesis against ``/openapi.json`` of a running server: a bounded run (a fixed seed, at
most ~20 s) in which no request may get a 5xx and no answer may disagree with the document
(status codes, content types, JSON bodies, every SSE event's data, headers), invalid requests
must be refused and valid ones accepted (the few exceptions, each with its reason, are in
``schemathesis.toml``). The longer run by hand is in docs/SERVER-API.md."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from server_helpers import Running

from wenxin_stream.server._openapi import document

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def test_schemathesis_finds_no_5xx_and_no_mismatch(
    make_server: Callable[..., Running], tmp_path: Path
) -> None:
    srv = make_server()
    proc = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", srv.url + "/openapi.json",
         "--seed", "20261203", "--max-examples", "10", "--max-time", "20", "--workers", "1",
         "--generation-database", "none", "--no-color", "--report-dir", str(tmp_path)],
        cwd=tmp_path,  # whatever schemathesis writes stays out of the repository
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-8000:] + proc.stderr[-2000:]
    selected = re.search(r"Operations: +(\d+) selected / (\d+) total", out)
    assert selected is not None
    assert selected[1] == selected[2]  # every operation of the document was fuzzed
    assert int(selected[1]) >= len(document("x")["paths"])
    assert " failed" not in out.split("SUMMARY")[-1]
