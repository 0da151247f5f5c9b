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


def test_runs_with_vars_keep_their_own_parse_state(tmp_path, monkeypatch):
    """A backtest's vars must not replace the production parse state: dbt re-parses the whole
    project when the vars differ from its folder's last parse, so each set of vars parses
    into a target folder of its own and the default folder keeps the production state."""
    from aisle.dbt import target_path

    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "target"))
    assert target_path() == tmp_path / "target"
    run_dbt(["parse"], quiet=True)
    production = (tmp_path / "target" / "partial_parse.msgpack").read_bytes()
    run_dbt(["parse"], vars={"as_of": "2015-09-04"}, quiet=True)
    run_dbt(["parse"], vars={"as_of": "2015-09-05"}, quiet=True)
    folders = sorted(p.name for p in (tmp_path / "target").glob("vars-*"))
    assert len(folders) == 2, folders
    assert all((tmp_path / "target" / f / "partial_parse.msgpack").exists() for f in folders)
    assert (tmp_path / "target" / "partial_parse.msgpack").read_bytes() == production
