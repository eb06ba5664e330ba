"""stress's verdict: its exit code from the run's, the planned kills forgiven, any problem fatal."""

from __future__ import annotations

from typing import Any, cast

import pytest

from mpmarket.cli.exitcodes import ExitCode
from mpmarket.run.stress import StressResult, stress_verdict


def _result(*problems: str) -> StressResult:
    # The verdict reads only the problems: no plan or report needs running.
    return StressResult(plan=cast(Any, None), report=cast(Any, None), problems=list(problems))


def _verdict(result: StressResult, run_code: ExitCode) -> ExitCode:
    return stress_verdict(result, run_code, ok=ExitCode.OK, failed=ExitCode.RUN_FAILED)


def test_a_clean_run_passes():
    assert _verdict(_result(), ExitCode.OK) is ExitCode.OK


def test_the_planned_kills_are_no_failure():
    # The run failed by its deaths alone, and every death was planned.
    assert _verdict(_result(), ExitCode.RUN_FAILED) is ExitCode.OK


def test_a_problem_fails_a_run_that_passed_or_failed():
    unbalanced = _result("the books do not balance at the end: ...")
    assert _verdict(unbalanced, ExitCode.OK) is ExitCode.RUN_FAILED
    assert _verdict(unbalanced, ExitCode.RUN_FAILED) is ExitCode.RUN_FAILED


@pytest.mark.parametrize("code", [ExitCode.INTERRUPTED, ExitCode.UNREACHABLE, ExitCode.DEADLOCK])
@pytest.mark.parametrize("problems", [(), ("cons1 died without being killed",)])
def test_a_graver_code_stays(code, problems):
    assert _verdict(_result(*problems), code) is code


def test_the_codes_are_the_callers():
    assert stress_verdict(_result(), 1, ok=0, failed=1) == 0
    assert stress_verdict(_result("x"), 0, ok=0, failed=1) == 1
