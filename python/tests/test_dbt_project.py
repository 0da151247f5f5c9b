"""The dbt project itself: it connects through the shared profile and parses."""

from __future__ import annotations

import pytest

from aisle.config import schema_suffix
from aisle.dbt import run_dbt


@pytest.mark.server
def test_dbt_debug_connects_through_the_profile(pg_target):
    """`dbt debug` validates the profile and opens a connection to the target under test."""
    run = run_dbt(["debug"], quiet=True)
    assert run.seconds > 0


def test_python_and_dbt_agree_on_backtest_schema_names():
    assert schema_suffix(None) == ""
    assert schema_suffix("") == ""
    assert schema_suffix("2015-09-04") == "_bt_20150904"
    assert schema_suffix("2015-09-04T12:30:00Z") == "_bt_20150904123000"
