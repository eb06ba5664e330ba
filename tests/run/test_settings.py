"""Which options of a run go together, and the workload they describe: the rules, called directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpmarket.core.generate import generate
from mpmarket.errors import WorkloadError
from mpmarket.run.settings import RunOptionsError, check_run_options, workload_from_options

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ADDRESS = ("127.0.0.1", 7151)


def test_a_plain_run_and_a_connected_run_take_their_own_options():
    check_run_options(connect=None)
    check_run_options(connect=None, log_file=Path("ops.log"), queue_size=4)
    check_run_options(
        connect=ADDRESS,
        only="producers",
        agents="prod1",
        shard=(1, 2),
        close_market=True,
        authkey_file=Path("key"),
    )


@pytest.mark.parametrize(
    ("option", "value", "flag"),
    [
        ("only", "consumers", "--only"),
        ("agents", "cons1,cons2", "--agents"),
        ("shard", (2, 4), "--shard"),
        ("close_market", True, "--close-market"),
        ("authkey_file", Path("key"), "--authkey-file"),
    ],
)
def test_the_options_of_a_part_of_a_served_run_need_connect(option, value, flag):
    with pytest.raises(RunOptionsError) as raised:
        check_run_options(connect=None, **{option: value})
    assert str(raised.value) == f"{flag} only go with --connect"


def test_every_option_without_connect_is_named_in_one_message():
    with pytest.raises(RunOptionsError) as raised:
        check_run_options(
            connect=None,
            only="producers",
            agents="a",
            shard=(1, 1),
            close_market=True,
            authkey_file=Path("k"),
        )
    assert str(raised.value) == (
        "--only, --agents, --shard, --close-market, --authkey-file only go with --connect"
    )


def test_a_false_close_market_is_not_given():
    check_run_options(connect=None, close_market=False)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"log_file": Path("ops.log")}, "--log-file"),
        ({"queue_size": 3}, "--queue-size"),
        ({"log_file": Path("ops.log"), "queue_size": 3}, "--log-file, --queue-size"),
    ],
)
def test_with_connect_the_server_decides_its_own_options(options, named):
    with pytest.raises(RunOptionsError) as raised:
        check_run_options(connect=ADDRESS, **options)
    assert str(raised.value) == f"{named}: the server decides this; give it to mpmarket serve"


def test_a_broken_rule_is_a_value_error():
    assert issubclass(RunOptionsError, ValueError)


def test_without_config_the_workload_is_generated_4_by_8_by_default():
    workload = workload_from_options(None, None, None, sessions=3, seed=0, queue_size=None)
    assert workload == generate(4, 8, sessions=3, seed=0)
    assert workload_from_options(None, 2, None, 1, 5, None) == generate(2, 8, sessions=1, seed=5)


def test_a_config_with_producers_or_consumers_is_refused():
    config = CONFIGS / "tea-and-coffee.toml"
    for producers, consumers in ((2, None), (None, 3), (2, 3)):
        with pytest.raises(RunOptionsError) as raised:
            workload_from_options(config, producers, consumers, 3, 0, None)
        assert str(raised.value) == "give either CONFIG or --producers/--consumers, not both"


def test_a_config_is_loaded_and_queue_size_overrides_it(tmp_path):
    config = CONFIGS / "tea-and-coffee.toml"
    loaded = workload_from_options(config, None, None, 3, 0, None)
    assert loaded.queue_size_per_producer == 3
    assert workload_from_options(config, None, None, 3, 0, 7).queue_size_per_producer == 7
    with pytest.raises(WorkloadError):
        workload_from_options(tmp_path / "missing.toml", None, None, 3, 0, None)
