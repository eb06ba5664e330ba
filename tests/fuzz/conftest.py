"""Print the fuzz campaign's figures at the end of a session that ran it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.fuzz import campaign


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not campaign.FIGURES["inputs tried"]:
        return
    terminalreporter.write_sep("-", "fuzz campaign")
    budget = f"{campaign.BUDGET_S:g} s a test" if campaign.BUDGET_S else "the short run"
    terminalreporter.write_line(f"{campaign.summary()} ({budget})")
    for line in campaign.FAILURES:
        terminalreporter.write_line(line)
    report = os.environ.get("MPMARKET_FUZZ_REPORT")
    if report:
        figures = dict(campaign.FIGURES)
        figures["budget_s_per_test"] = campaign.BUDGET_S
        Path(report).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
