"""The reliability sweep's table, as pytest hooks that tests/conftest.py takes in.

With `--reliability-table FILE` (`make reliability`) they write the outcome table of tests/reliability/ (each case,
what it gets, whether that held on this run, with counts) between the `<!-- sweep:start -->` and
`<!-- sweep:end -->` markers of FILE (docs/reliability.md). The table is made from the tests themselves, so it
cannot claim a case that is not checked."""

from __future__ import annotations

import datetime
import inspect
import re
from pathlib import Path

import pytest

CASES: dict[str, dict] = {}


def pytest_addoption(parser):
    parser.addoption("--reliability-table", metavar="FILE", default=None,
                     help="write the sweep's table between the <!-- sweep:start/end --> markers of FILE")


def pytest_collection_modifyitems(items):
    for item in items:
        if not isinstance(item, pytest.Function) or "reliability" not in Path(str(item.fspath)).parts:
            continue
        function = item.function.__name__
        kind = "error" if function.startswith("test_error_") else "recovery"
        area = (inspect.getdoc(item.module) or "").split(":")[0].replace("The bad-input sweep, ", "")
        name = item.callspec.id if hasattr(item, "callspec") else function.split("_", 2)[2].replace("_", " ")
        CASES[item.nodeid] = {"area": area, "file": Path(str(item.fspath)).name, "case": name, "kind": kind,
                              "outcome": " ".join((inspect.getdoc(item.function) or "").split()), "result": None}


def pytest_runtest_logreport(report):
    case = CASES.get(report.nodeid)
    if case is not None and (report.when == "call" or report.outcome != "passed"):
        if case["result"] in (None, "passed"):
            case["result"] = report.outcome


def pytest_sessionfinish(session):
    target = session.config.getoption("--reliability-table")
    if not target or not CASES:
        return
    ran = [c for c in CASES.values() if c["result"] is not None]
    passed = sum(c["result"] == "passed" for c in ran)
    errors = sum(c["kind"] == "error" for c in ran)
    lines = [f"Written by `make reliability` on {datetime.date.today()}: {len(ran)} cases, {passed} passed, "
             f"{len(ran) - passed} failed or skipped. {errors} end in an error that names the input (a one-line "
             f"`error:` and exit 1 or 2 on the command line), {len(ran) - errors} in a documented recovery that the "
             "test checks. A failing case would be a raw traceback, a silently wrong result or a hang (the signal "
             "runs have a time limit); a pickle load would fail the checkpoint cases.", ""]
    for area in dict.fromkeys(c["area"] for c in ran):
        rows = [c for c in ran if c["area"] == area]
        lines += [f"### {area} (`tests/reliability/{rows[0]['file']}`, {len(rows)} cases)", "",
                  "| case | outcome | result |", "|---|---|---|"]
        lines += [f"| {c['case']} | {'' if c['kind'] == 'error' else 'recovery: '}{c['outcome']} | {c['result']} |"
                  for c in rows]
        lines.append("")
    path = Path(target)
    text = path.read_text()
    start, end = "<!-- sweep:start -->", "<!-- sweep:end -->"
    if start not in text or end not in text:
        raise pytest.UsageError(f"{path} lacks the {start} / {end} markers")
    block = "\n".join(lines)
    path.write_text(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{block}\n{end}", text,
                           flags=re.S))
