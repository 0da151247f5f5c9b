"""Run dbt in-process with ``dbtRunner``, one invocation at a time.

In-process saves the interpreter start and keeps one place where the target, the
profile folder and the vars are passed, so Python and dbt always agree on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from aisle.config import profiles_dir, project_root, resolve_target


class DbtFailed(Exception):
    """A dbt invocation failed; the message lists the failing nodes."""


@dataclass
class NodeTiming:
    name: str
    resource_type: str
    status: str
    seconds: float
    message: str = ""


@dataclass
class DbtRun:
    command: list[str]
    seconds: float
    nodes: list[NodeTiming] = field(default_factory=list)

    def slowest(self, n: int = 5, resource_type: str | None = "model") -> list[NodeTiming]:
        nodes = [x for x in self.nodes if resource_type is None or x.resource_type == resource_type]
        return sorted(nodes, key=lambda x: -x.seconds)[:n]

    def count(self, resource_type: str) -> int:
        return sum(1 for x in self.nodes if x.resource_type == resource_type)


def dbt_args(command: list[str], target: str | None = None, vars: dict | None = None) -> list[str]:
    """Full dbt argument list with the project, the profile folder, the target and vars."""
    resolve_target(target)  # exports AISLE_SOCKET_DIR for the profile's dev target
    args = [*command, "--project-dir", str(project_root()), "--profiles-dir", str(profiles_dir())]
    if target:
        args += ["--target", target]
    if vars:
        rendered = json.dumps(vars, sort_keys=True)
        args += ["--vars", rendered]
        # Each set of vars parses into a target folder of its own. dbt re-parses the whole
        # project (~5 s at full scale, on this machine) whenever the vars differ from those of
        # the last parse in its target folder, so production runs (no vars) and backtests
        # (as_of, ...) sharing one folder re-parsed each time the user switched between them.
        digest = hashlib.sha256(rendered.encode()).hexdigest()[:12]
        args += ["--target-path", str(target_path() / f"vars-{digest}")]
    return args


def target_path() -> Path:
    """dbt's target folder: DBT_TARGET_PATH (relative to the project) or the project's `target`."""
    path = Path(os.environ.get("DBT_TARGET_PATH") or "target")
    return path if path.is_absolute() else project_root() / path


def run_dbt(command: list[str], *, target: str | None = None, vars: dict | None = None,
            quiet: bool = False, check: bool = True) -> DbtRun:
    """Run one dbt command (for example ``["build", "--select", "staging"]``).

    Raises :class:`DbtFailed` naming each failing node when ``check`` is true.
    """
    from dbt.cli.main import dbtRunner

    args = dbt_args(command, target, vars)
    if quiet:
        args = ["--quiet", *args]
    started = time.perf_counter()
    result = dbtRunner().invoke(args)
    run = DbtRun(command=command, seconds=time.perf_counter() - started)
    failures: list[str] = []
    results = getattr(result.result, "results", None) or []
    for r in results:
        node = getattr(r, "node", None)
        name = getattr(node, "name", "?")
        rtype = str(getattr(node, "resource_type", "?"))
        status = str(getattr(r, "status", "?"))
        run.nodes.append(NodeTiming(name, rtype, status, float(getattr(r, "execution_time", 0.0) or 0.0),
                                    str(getattr(r, "message", "") or "")))
        if status in ("error", "fail", "runtime error"):
            failures.append(f"{rtype} {name}: {status} ({getattr(r, 'message', '')})")
    if check and (not result.success or failures):
        detail = "; ".join(failures) or str(result.exception or "see the dbt log above")
        raise DbtFailed(f"dbt {' '.join(command)} failed: {detail}")
    return run
