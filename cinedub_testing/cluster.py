"""A throwaway PostgreSQL for the scale-out tests and the worker benchmark (servers and workers: :mod:`flows.procs`).

:class:`Postgres` makes a cluster in a temporary folder with Debian's ``postgresql`` package (``initdb`` and
``pg_ctl`` from ``/usr/lib/postgresql/<v>/bin``), listening on 127.0.0.1 only, trust auth, durability off (a test
database). As root it runs as the ``postgres`` user (``runuser``), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from flows.procs import PrefectServer, Worker, free_port, kill_tree, prefect_env  # noqa: F401 - one import for tests


def pg_bin(tool: str) -> str | None:
    """Path of a PostgreSQL server tool (``initdb``, ``pg_ctl``), newest version first, or None."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"), key=lambda p: int(p.split("/")[4]), reverse=True)
    return found[0] if found else shutil.which(tool)


class Postgres:
    """A temporary PostgreSQL cluster; ``url(db)`` gives a SQLAlchemy URL. Use as a context manager.

    Raises:
        RuntimeError: PostgreSQL is not installed (``apt-get install -y postgresql``) or did not start.
    """

    def __init__(self, user: str = "cinedub"):
        self.user = user
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="cinedub-pg-"))
        self.data = self.dir / "data"
        self._as_root = os.geteuid() == 0

    def _cmd(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_root else args

    def start(self) -> "Postgres":
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL server tools not found: apt-get install -y postgresql")
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(self._cmd([initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                                  "--no-sync"]), check=True, capture_output=True)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        subprocess.run(self._cmd([pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w",
                                  "-t", "60", "start"]), check=True, capture_output=True)
        return self

    def create_db(self, name: str) -> str:
        subprocess.run(self._cmd(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "postgres",
                                  "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"']),
                       check=True, capture_output=True)
        return self.url(name)

    def url(self, db: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        pg_ctl = pg_bin("pg_ctl")
        if pg_ctl and self.data.is_dir():
            subprocess.run(self._cmd([pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Postgres":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
