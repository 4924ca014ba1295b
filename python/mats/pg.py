"""A private PostgreSQL server for the SQL store, from Debian's package, in a run folder.

The SQL store (:mod:`mats.store`) is SQLite by default; integration tests, the demo and a
desk that wants a real server use PostgreSQL. This module runs one from the server binaries
of Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``), with its own
cluster in a run folder (default ``run/pg`` in the checkout, git-ignored):

``data/``
    the cluster (``initdb``), with ``mats.conf`` (port, loopback only, no Unix socket)
    included from its ``postgresql.conf``, and a ``pg_hba.conf`` that trusts loopback only
``server.log``
    the server's log
``pg.json``
    what :func:`up` chose: the port, host, database and the binaries' folder

The server listens on 127.0.0.1 only and trusts every connection from there (no password):
the ``mats`` superuser and the ``mats`` database, at
``postgresql+psycopg://mats@127.0.0.1:<port>/mats`` (:func:`url`). ``initdb``, ``pg_ctl``
and ``postgres`` refuse to run as root; run as root, this module runs them as the system user
``postgres`` (which Debian's package creates; ``MATS_PG_USER`` names another) and gives it
the run folder.

``python -m mats.pg up|down|status|url|deps`` is the command line (:func:`main`).

Environment
-----------
``MATS_PG_RUN_DIR``
    the run folder (default ``run/pg`` in the checkout)
``MATS_PG_BIN``
    a folder holding ``initdb``, ``pg_ctl``, ``postgres`` and ``psql``, for a PostgreSQL
    not installed by Debian's package (default: the newest ``/usr/lib/postgresql/*/bin``)
``MATS_PG_USER``
    the system user the server runs as when this runs as root (default ``postgres``)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DATABASE",
    "DEFAULT_RUN_DIR",
    "HOST",
    "SUPERUSER",
    "PgError",
    "PgServer",
    "PgStatus",
    "down",
    "ensure_installed",
    "find_server",
    "main",
    "run_dir_of",
    "status",
    "up",
    "url",
]

# python/mats/pg.py -> the checkout, when mats is installed editable from one
_CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_RUN_DIR = _CHECKOUT / "run" / "pg"
PG_LIB = Path("/usr/lib/postgresql")  # where Debian's packages put each version's binaries

HOST = "127.0.0.1"
DATABASE = "mats"
SUPERUSER = "mats"
SERVER_USER = "postgres"  # created by Debian's package; the server's account when we are root
DEBIAN_PACKAGE = "postgresql"

_TOOLS = ("initdb", "pg_ctl", "postgres", "psql")
_CONF = "mats.conf"
_STATE = "pg.json"


class PgError(RuntimeError):
    """PostgreSQL could not be installed, started, reached or stopped; the message says why.

    One line, worded for the user of ``python -m mats.pg`` (or ``mats db``).
    """


# ------------------------------------------------------------------------------ binaries


@dataclass(frozen=True)
class PgServer:
    """One installed PostgreSQL: its major version and the folder of its programs."""

    version: str
    bin_dir: Path

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)


def _has_tools(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / t, os.X_OK) for t in _TOOLS)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (-1,)


def find_server(version: str | None = None, *, root: Path = PG_LIB,
                env: Mapping[str, str] | None = None) -> PgServer | None:
    """The installed PostgreSQL server to use, None if there is none.

    Parameters
    ----------
    version
        A major version (``"15"``), as a cluster's ``PG_VERSION`` names it; default the newest
        installed.
    root
        Where the versions' folders are (Debian: ``/usr/lib/postgresql``).
    env
        The environment (default ``os.environ``): ``MATS_PG_BIN`` names the binaries' folder
        and wins over ``root``.
    """
    env = os.environ if env is None else env
    given = env.get("MATS_PG_BIN")
    if given:
        bin_dir = Path(given)
        return PgServer(version or _major_version(bin_dir), bin_dir) if _has_tools(
            bin_dir) else None
    if version is not None:
        bin_dir = root / version / "bin"
        return PgServer(version, bin_dir) if _has_tools(bin_dir) else None
    with contextlib.suppress(OSError):
        for folder in sorted(root.iterdir(), key=lambda p: _version_key(p.name), reverse=True):
            if _has_tools(folder / "bin"):
                return PgServer(folder.name, folder / "bin")
    return None


def _major_version(bin_dir: Path) -> str:
    try:
        out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    return found.group(1) if found else "?"


def _euid() -> int:
    return os.geteuid()


def ensure_installed(*, root: Path = PG_LIB, env: Mapping[str, str] | None = None,
                     announce: Callable[[str], None] | None = None) -> PgServer:
    """The installed PostgreSQL server; Debian's package ``postgresql`` is installed if missing.

    apt-get runs non-interactively; if the install fails (package lists missing or stale, as
    on a fresh machine), the lists are updated and the install tried once more.

    Raises
    ------
    PgError
        There is no server and no apt-get, this is not root, or apt-get failed.
    """
    env = os.environ if env is None else env
    found = find_server(root=root, env=env)
    if found is not None:
        return found
    if env.get("MATS_PG_BIN"):
        raise PgError(f"MATS_PG_BIN={env['MATS_PG_BIN']} does not hold PostgreSQL's "
                      f"{', '.join(_TOOLS)}")
    apt = shutil.which("apt-get", path=env.get("PATH", os.defpath))
    if apt is None:
        raise PgError(f"PostgreSQL's server is not installed (no {root}/*/bin/postgres) and "
                      "there is no apt-get to install it: install PostgreSQL, or set "
                      "MATS_PG_BIN to the folder of its initdb, pg_ctl, postgres and psql")
    if _euid() != 0:
        raise PgError(f"PostgreSQL's server is not installed (no {root}/*/bin/postgres); "
                      f"installing Debian's package needs root: sudo apt-get install "
                      f"{DEBIAN_PACKAGE} (or run `python -m mats.pg deps` as root)")
    apt_env = {**env, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "-q", "-y", "-o", "DPkg::Lock::Timeout=300", "install",
               "--no-install-recommends", DEBIAN_PACKAGE]
    if announce:
        announce(f"installing Debian's package {DEBIAN_PACKAGE} with apt-get")
    done = _apt(install, apt_env)
    if done.returncode != 0:
        if announce:
            announce("the install failed; updating the package lists and trying again")
        _apt([apt, "-q", "-o", "DPkg::Lock::Timeout=300", "update"], apt_env)
        done = _apt(install, apt_env)
    if done.returncode != 0:
        raise PgError(f"apt-get install {DEBIAN_PACKAGE} failed: "
                      f"{_last_line(done.stderr or done.stdout)}")
    found = find_server(root=root, env=env)
    if found is None:
        raise PgError(f"apt-get installed {DEBIAN_PACKAGE}, yet there is no server in "
                      f"{root}/*/bin")
    return found


def _apt(cmd: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, env=dict(env), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PgError(f"{' '.join(cmd[:1])} could not run: {e}") from None


# ------------------------------------------------------------------------------ the run folder


def run_dir_of(run_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The run folder: ``run_dir``, else ``MATS_PG_RUN_DIR``, else ``run/pg`` in the checkout."""
    env = os.environ if env is None else env
    chosen = run_dir or env.get("MATS_PG_RUN_DIR") or DEFAULT_RUN_DIR
    return Path(chosen).absolute()


def url(port: int, *, host: str = HOST, database: str = DATABASE) -> str:
    """The SQLAlchemy URL of the ``mats`` database of a server of this module."""
    return f"postgresql+psycopg://{SUPERUSER}@{host}:{port}/{database}"


def _data(run: Path) -> Path:
    return run / "data"


def _log(run: Path) -> Path:
    return run / "server.log"


def _read_state(run: Path) -> dict[str, Any]:
    try:
        state = json.loads((run / _STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _recorded_port(run: Path) -> int | None:
    port = _read_state(run).get("port")
    return port if isinstance(port, int) and 0 < port < 65536 else None


@contextlib.contextmanager
def _locked(run: Path) -> Iterator[None]:
    """One ``up`` or ``down`` of a run folder at a time (other processes wait)."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        handle = (run / ".lock").open("a")
    except OSError as e:
        raise PgError(f"cannot use the run folder {run}: {e.strerror}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------ accounts


@dataclass(frozen=True)
class _Account:
    """The system user a server program runs as (when we are root)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def _account(entry: pwd.struct_passwd) -> _Account:
    return _Account(entry.pw_name, entry.pw_uid, entry.pw_gid,
                    tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)))


def _server_account(env: Mapping[str, str]) -> _Account | None:
    """Who runs the server: None for ourselves, else the system user (we are root)."""
    if _euid() != 0:
        return None
    name = env.get("MATS_PG_USER") or SERVER_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PgError(f"PostgreSQL refuses to run as root and there is no user {name!r} to run "
                      f"it as: install Debian's package {DEBIAN_PACKAGE} (it creates "
                      f"{SERVER_USER!r}), set MATS_PG_USER, or run as another user") from None
    if entry.pw_uid == 0:
        raise PgError(f"MATS_PG_USER={name} is root, which PostgreSQL refuses: name another "
                      "user")
    return _account(entry)


def _owner_account(path: Path) -> _Account | None:
    """Who runs the programs of an existing cluster: its owner, when we are root."""
    if _euid() != 0:
        return None
    uid = path.stat().st_uid
    try:
        return _account(pwd.getpwuid(uid))
    except KeyError:
        raise PgError(f"{path} belongs to uid {uid}, which has no user name") from None


def _may_enter(path: Path, who: _Account) -> bool:
    st = path.stat()
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in who.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _give_run_dir(run: Path, who: _Account | None) -> None:
    """Let ``who`` use the run folder: its own, reached through folders it may enter."""
    if who is None:
        return
    for parent in reversed(run.parents):
        if not _may_enter(parent, who):
            mode = stat.S_IMODE(parent.stat().st_mode)
            raise PgError(f"the server runs as {who.name}, who cannot enter {parent} (mode "
                          f"{mode:o}, owner {_user_name(parent.stat().st_uid)}): choose a run "
                          f"folder {who.name} can reach (MATS_PG_RUN_DIR)")
    os.chown(run, who.uid, who.gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _run(cmd: list[str], who: _Account | None, *, cwd: Path, timeout: float,
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a server program (as ``who`` when given), its output captured."""
    as_user: dict[str, Any] = {}
    if who is not None:
        as_user = dict(user=who.uid, group=who.gid, extra_groups=list(who.groups))
    run_env = {k: v for k, v in (os.environ if env is None else env).items()
               if not k.startswith("PG")}  # a user's PGHOST, PGPORT... must not redirect us
    if who is not None:
        home = pwd.getpwuid(who.uid).pw_dir
        run_env.update(HOME=home, USER=who.name, LOGNAME=who.name)
    try:
        return subprocess.run(cmd, cwd=cwd, env=run_env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False,
                              **as_user)
    except subprocess.TimeoutExpired:
        raise PgError(f"{Path(cmd[0]).name} did not finish within {timeout:.0f} s") from None
    except OSError as e:
        raise PgError(f"{Path(cmd[0]).name} could not run: {e.strerror or e}") from None


# ------------------------------------------------------------------------------ the server


def _initdb(server: PgServer, run: Path, who: _Account | None, timeout: float) -> None:
    data = _data(run)
    data.mkdir(mode=0o700, exist_ok=True)
    if who is not None:
        os.chown(data, who.uid, who.gid)
    # C locale: sorting and case rules that do not depend on the machine's locales
    done = _run([server.tool("initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust",
                 "-E", "UTF8", "--no-locale"], who, cwd=run, timeout=timeout)
    if done.returncode != 0:
        raise PgError(f"initdb failed: {_last_line(done.stderr or done.stdout)}")
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"\n# MATS (mats.pg): port and listeners\ninclude_if_exists = '{_CONF}'\n")
    _write_owned(data / "pg_hba.conf",
                 "# MATS (mats.pg): the server listens on loopback only; there it trusts anyone\n"
                 "host all all 127.0.0.1/32 trust\n"
                 "host all all ::1/128 trust\n", who)


def _write_owned(path: Path, text: str, who: _Account | None) -> None:
    path.write_text(text, encoding="utf-8")
    if who is not None:
        os.chown(path, who.uid, who.gid)


def _server_pid(run: Path) -> int | None:
    """The pid of the server of this run folder's cluster, if it is running.

    From ``postmaster.pid``, checked against the process's command line: a stale file whose
    pid now belongs to another program does not count.
    """
    data = _data(run)
    try:
        first = (data / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        return None
    if not first.strip().isdigit():
        return None
    pid = int(first)
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rpartition(")")[2].split()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not state or state[0] in ("Z", "X"):
        return None
    return pid if str(data).encode() in argv else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _psql(server: PgServer, port: int, sql: str, *, database: str = "postgres",
          timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    cmd = [server.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
           "-h", HOST, "-p", str(port), "-U", SUPERUSER, "-d", database, "-c", sql]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = str(max(int(timeout), 2))
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout + 5, check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 1, "", f"psql did not finish in {timeout} s")
    except OSError as e:
        return subprocess.CompletedProcess(cmd, 1, "", f"psql could not run: {e}")


def _start(server: PgServer, run: Path, who: _Account | None, port: int,
           timeout: float) -> subprocess.CompletedProcess[str]:
    _write_owned(_data(run) / _CONF,
                 "# written by mats.pg at every start\n"
                 f"port = {port}\n"
                 f"listen_addresses = '{HOST}'\n"
                 "unix_socket_directories = ''\n", who)
    state = {"host": HOST, "port": port, "database": DATABASE, "user": SUPERUSER,
             "version": server.version, "bin_dir": str(server.bin_dir)}
    (run / _STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    # -w: pg_ctl returns once the server accepts connections (or has failed)
    return _run([server.tool("pg_ctl"), "start", "-D", str(_data(run)), "-l", str(_log(run)),
                 "-w", "-t", str(max(int(timeout), 1)), "-s"], who, cwd=run,
                timeout=timeout + 30)


def _log_size(run: Path) -> int:
    try:
        return _log(run).stat().st_size
    except OSError:
        return 0


def _log_problem(run: Path, since: int, fallback: str) -> str:
    """The last FATAL/PANIC/ERROR line the server logged after byte ``since``, else
    its last line then, else ``fallback`` (pg_ctl's own word, when the server logged nothing).
    """
    try:
        with _log(run).open("rb") as log:
            log.seek(since)
            lines = log.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        found = re.search(r"\b(?:FATAL|PANIC|ERROR):\s+(.*)", line)
        if found:
            return found.group(1).strip()
    return lines[-1].strip() if lines else fallback


def _cluster_server(run: Path, env: Mapping[str, str]) -> PgServer:
    """The binaries of the run folder's cluster (its major version), else the newest."""
    try:
        version: str | None = (_data(run) / "PG_VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        version = None
    server = find_server(version, env=env)
    if server is not None:
        return server
    if env.get("MATS_PG_BIN"):
        raise PgError(f"MATS_PG_BIN={env['MATS_PG_BIN']} does not hold PostgreSQL's "
                      f"{', '.join(_TOOLS)}")
    if version is not None and find_server(env=env) is not None:
        raise PgError(f"the cluster in {_data(run)} is PostgreSQL {version}, which is not "
                      f"installed: install postgresql-{version}, or remove {run} to start "
                      "afresh")
    raise PgError(f"PostgreSQL's server is not installed (no {PG_LIB}/*/bin/postgres): run "
                  "`python -m mats.pg deps` (or make pg-deps) as root, or set MATS_PG_BIN")


def up(run_dir: str | Path | None = None, port: int | None = None, *, timeout: float = 60.0,
       env: Mapping[str, str] | None = None,
       announce: Callable[[str], None] | None = None) -> str:
    """Start the run folder's server if it is not running; the URL of its ``mats`` database.

    The first time, the cluster is made (``initdb``) and the ``mats`` database created.

    Parameters
    ----------
    run_dir
        The run folder (:func:`run_dir_of`).
    port
        The loopback port: 0 picks a free one; None (default) the one recorded in the run
        folder, else a free one. A server already running keeps its port.
    timeout
        How long to wait for the server to answer, in seconds.
    env
        The environment (default ``os.environ``).
    announce
        Called with a line of progress (the first start, a new cluster).

    Returns
    -------
    str
        ``postgresql+psycopg://mats@127.0.0.1:<port>/mats``.

    Raises
    ------
    PgError
        No server is installed, the port is taken, the run folder is not usable, or the
        server did not start or answer (the message quotes its log).
    """
    env = os.environ if env is None else env
    if port is not None and not 0 <= port < 65536:
        raise PgError(f"port {port} is not a TCP port (0 picks a free one)")
    run = run_dir_of(run_dir, env)
    with _locked(run):
        server = _cluster_server(run, env)
        pid = _server_pid(run)
        if pid is not None:
            running = _running_port(run)
            if port and running != port:
                raise PgError(f"PostgreSQL of {run} runs on port {running}, not {port}: run "
                              "`down` first to move it")
            _ensure_database(server, running, time.monotonic() + timeout, run)
            return url(running)
        if port and not _port_free(port):  # said before a new cluster is made in vain
            raise PgError(_port_taken(port))
        if (_data(run) / "PG_VERSION").exists():
            who = _owner_account(_data(run))
        else:
            who = _server_account(env)
            _give_run_dir(run, who)
            if announce:
                announce(f"making a PostgreSQL {server.version} cluster in {_data(run)}")
            _initdb(server, run, who, timeout=max(timeout, 60.0))
        chosen = _start_on_a_port(server, run, who, port, timeout, announce)
        try:
            _ensure_database(server, chosen, time.monotonic() + timeout, run)
        except PgError:  # a server that never became usable is not left behind
            _stop(server, run, timeout=10.0)
            raise
        return url(chosen)


def _running_port(run: Path) -> int:
    # postmaster.pid's fourth line is the port the running server listens on
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int((_data(run) / "postmaster.pid").read_text(encoding="utf-8").split("\n")[3])
    recorded = _recorded_port(run)
    if recorded is None:
        raise PgError(f"PostgreSQL of {run} runs, but on which port is not recorded")
    return recorded


def _start_on_a_port(server: PgServer, run: Path, who: _Account | None, port: int | None,
                     timeout: float, announce: Callable[[str], None] | None) -> int:
    wanted = _recorded_port(run) if port is None else port
    tries = 1 if wanted else 3  # a free port can be taken before the server binds it
    for _ in range(tries):
        chosen = wanted or _free_port()
        if not _port_free(chosen):
            raise PgError(_port_taken(chosen))
        if announce:
            announce(f"starting PostgreSQL {server.version} on {HOST}:{chosen}")
        since = _log_size(run)
        done = _start(server, run, who, chosen, timeout)
        if done.returncode == 0:
            return chosen
        problem = _log_problem(run, since, _last_line(done.stderr or done.stdout))
        if _server_pid(run) is not None:  # started, but not ready in time
            _stop(server, run, timeout=10.0)
        if "could not bind" in problem or "already in use" in problem:
            if wanted:
                raise PgError(_port_taken(chosen))
            continue
        raise PgError(f"PostgreSQL did not start: {problem} (see {_log(run)})")
    raise PgError(f"PostgreSQL found no free port on {HOST} in {tries} tries")


def _port_taken(port: int) -> str:
    return (f"{HOST}:{port} is in use by another program: choose another port (0 picks a free "
            "one) or stop what holds it")


def _ensure_database(server: PgServer, port: int, deadline: float, run: Path) -> None:
    """Wait until the server answers, then create the ``mats`` database if it is missing."""
    exists = f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}'"
    while True:
        done = _psql(server, port, exists,
                     timeout=min(max(deadline - time.monotonic(), 1.0), 10.0))
        if done.returncode == 0:
            break
        if time.monotonic() >= deadline:
            raise PgError(f"PostgreSQL on {HOST}:{port} did not answer: "
                          f"{_last_line(done.stderr)} (see {_log(run)})")
        time.sleep(0.2)
    if done.stdout.strip() == "0":
        made = _psql(server, port, f"CREATE DATABASE {DATABASE}")
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise PgError(f"could not create the database {DATABASE}: "
                          f"{_last_line(made.stderr)}")


def _stop(server: PgServer, run: Path, *, timeout: float) -> None:
    who = _owner_account(_data(run))
    data = str(_data(run))
    pg_ctl = server.tool("pg_ctl")
    # fast: open sessions are ended, the data is written out; immediate if that hangs
    done = _run([pg_ctl, "stop", "-D", data, "-m", "fast", "-w", "-t",
                 str(max(int(timeout), 1)), "-s"], who, cwd=run, timeout=timeout + 30)
    if done.returncode != 0 and _server_pid(run) is not None:
        done = _run([pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", "30", "-s"],
                    who, cwd=run, timeout=60)
        if done.returncode != 0 and _server_pid(run) is not None:
            raise PgError(f"PostgreSQL of {run} did not stop: "
                          f"{_last_line(done.stderr or done.stdout)}")


def down(run_dir: str | Path | None = None, *, timeout: float = 30.0,
         env: Mapping[str, str] | None = None) -> int | None:
    """Stop the run folder's server cleanly (``pg_ctl stop -m fast``); its data stays.

    If it has not stopped after ``timeout`` seconds, it is stopped at once (``-m immediate``:
    the next start recovers from the log).

    Returns
    -------
    int or None
        The pid of the server stopped; None if none was running.
    """
    env = os.environ if env is None else env
    run = run_dir_of(run_dir, env)
    if not _data(run).is_dir():
        return None
    with _locked(run):
        pid = _server_pid(run)
        if pid is None:
            return None
        _stop(_cluster_server(run, env), run, timeout=timeout)
        return pid


@dataclass
class PgStatus:
    """What ``python -m mats.pg status`` reports about a run folder."""

    run_dir: Path
    initialized: bool  # the cluster exists
    version: str | None = None  # the cluster's major version
    pid: int | None = None  # the running server's
    port: int | None = None  # the running server's, else the recorded one
    answering: bool = False  # the mats database answers a query

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def url(self) -> str | None:
        return url(self.port) if self.port else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(run_dir=str(self.run_dir), running=self.running, url=self.url)
        return out


def status(run_dir: str | Path | None = None, *,
           env: Mapping[str, str] | None = None) -> PgStatus:
    """Whether the run folder holds a cluster, whether its server runs, where, and answers."""
    env = os.environ if env is None else env
    run = run_dir_of(run_dir, env)
    try:
        version: str | None = (_data(run) / "PG_VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        version = None
    st = PgStatus(run_dir=run, initialized=version is not None, version=version,
                  port=_recorded_port(run))
    st.pid = _server_pid(run)
    if st.pid is None:
        return st
    with contextlib.suppress(PgError):
        st.port = _running_port(run)
        server = _cluster_server(run, env)
        st.answering = _psql(server, st.port, "SELECT 1", database=DATABASE,
                             timeout=5.0).returncode == 0
    return st


# ------------------------------------------------------------------------------ command line

HELP = """\
The server is Debian's PostgreSQL (package postgresql; `deps` installs it), with its own
cluster in the run folder: data/, server.log and pg.json (the port). It listens on 127.0.0.1
only and trusts every connection from there: user mats, database mats. Point the SQL store at
it with MATS_DB_URL="$(python -m mats.pg url)". Its data survives `down` and `up`.

environment:
  MATS_PG_RUN_DIR  the run folder (default: run/pg in the checkout)
  MATS_PG_BIN      the folder of initdb, pg_ctl, postgres and psql (default: the newest
                   /usr/lib/postgresql/*/bin)
  MATS_PG_USER     the user the server runs as when run as root (default: postgres)

exit status:
  0  done (`status`: the server answers; `url`: a port is recorded)
  1  PostgreSQL could not be installed, started, reached or stopped (`status`: it does not
     answer; `url`: nothing recorded)
  2  a wrong option
"""


def build_parser(prog: str = "python -m mats.pg") -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Run a private PostgreSQL server for the MATS SQL store.",
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--run-dir", metavar="DIR",
                       help="the run folder (default: $MATS_PG_RUN_DIR, else run/pg in the "
                            "checkout)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up_ = sub.add_parser(
        "up", parents=[where], help="start the server if needed and print its URL",
        description="Make the cluster on first use, start the server detached, wait until it "
                    "answers, create the mats database; print the SQLAlchemy URL on stdout.")
    up_.add_argument("--port", type=_port, metavar="PORT",
                     help="loopback port; 0 picks a free one (default: the recorded one, else "
                          "a free one)")
    up_.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long to wait for the server to answer (default: 60)")
    down_ = sub.add_parser(
        "down", parents=[where], help="stop the server (its data stays)",
        description="Stop the server (fast shutdown; immediate after --timeout seconds).")
    down_.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                       help="how long to wait for a fast shutdown (default: 30)")
    st = sub.add_parser("status", parents=[where], help="is the server running and answering",
                        description="Exit 0 if the server answers, 1 if not.")
    st.add_argument("--json", action="store_true", help="print JSON")
    sub.add_parser("url", parents=[where], help="print the URL of the recorded port",
                   description="Print the SQLAlchemy URL of the server's mats database (the "
                               "port recorded by the last `up`), for MATS_DB_URL.")
    sub.add_parser("deps", help="install Debian's package postgresql if no server is there",
                   description="Install Debian's package postgresql with apt-get (as root) "
                               "unless a server is installed already.")
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0 to 65535)")
    return value


def _say(text: str) -> None:
    print(f"pg: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m mats.pg") -> int:
    """``python -m mats.pg up|down|status|url|deps``; returns the exit status.

    Errors are one line on stderr (``pg: error: ...``), never a traceback: exit 1 when
    PostgreSQL could not be installed, started, reached or stopped, 2 for a wrong option.
    """
    parser = build_parser(prog)
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:  # --help, or a usage error already reported by argparse
        return e.code if isinstance(e.code, int) else 2
    try:
        return _act(args)
    except PgError as e:
        print(f"pg: error: {e}", file=sys.stderr, flush=True)
        return 1


def _act(args: argparse.Namespace) -> int:
    if args.action == "deps":
        server = ensure_installed(announce=_say)
        _say(f"PostgreSQL {server.version} in {server.bin_dir}")
        return 0
    if args.action == "up":
        found = up(args.run_dir, args.port, timeout=args.timeout, announce=_say)
        print(found, flush=True)
        return 0
    if args.action == "down":
        run = run_dir_of(args.run_dir)
        pid = down(run, timeout=args.timeout)
        _say(f"stopped (pid {pid}); the data stays in {run}" if pid is not None
             else f"not running in {run}: nothing to stop")
        return 0
    st = status(args.run_dir)
    if args.action == "url":
        if st.url is None:
            _say(f"no port recorded in {st.run_dir}: run `up` first")
            return 1
        print(st.url, flush=True)
        return 0
    if args.json:
        print(json.dumps(st.as_dict(), indent=2), flush=True)
    else:
        state = ("answering" if st.answering else "running, not answering") if st.running \
            else ("stopped" if st.initialized else "no cluster")
        lines = [f"postgresql {state}" + (f" (PostgreSQL {st.version})" if st.version else ""),
                 f"run dir    {st.run_dir}"]
        if st.running:
            lines.append(f"pid        {st.pid}")
        if st.url:
            lines.append(f"url        {st.url}")
        print("\n".join(lines), flush=True)
    return 0 if st.answering else 1


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


if __name__ == "__main__":
    sys.exit(main())
