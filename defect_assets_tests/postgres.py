"""A throwaway PostgreSQL server for tests: Debian's binaries (installed by ``./run test``), a
cluster made by ``initdb`` in a temporary folder, listening on 127.0.0.1 at a free port, with a
password (scram-sha-256), stopped and deleted at the end. PostgreSQL refuses to run as root, so
under root the server runs as ``nobody`` (through ``runuser``)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from defect_assets_tests.dask_cluster import free_port
from defect_assets_tests.waits import READY_SECONDS, SUBPROCESS_SECONDS


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's versioned folder (newest first)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {name} is not installed: ./run test installs Debian's postgresql "
                                "(or: apt-get install -y postgresql)")
    return found


class LocalPostgres:
    """``with LocalPostgres() as pg:`` a server on 127.0.0.1:``pg.port``, user ``pg.user``."""

    def __init__(self, user: str = "dagster", db: str = "dagster"):
        self.user, self.db, self.password = user, db, secrets.token_hex(12)
        self.port = free_port()
        self.as_nobody = os.geteuid() == 0
        self.dir: Path | None = None

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "nobody", "--"] if self.as_nobody else []
        return subprocess.run(prefix + args, check=True, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS,
                              **kw)

    def start(self) -> LocalPostgres:
        # under /tmp, not pytest's tmp_path: its parents are private to root and nobody must enter
        self.dir = Path(tempfile.mkdtemp(prefix="defect-assets-pg-"))
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_nobody:
            shutil.chown(self.dir, "nobody")
            shutil.chown(pwfile, "nobody")
        data = self.dir / "data"
        self._run([pg_bin("initdb"), "-D", str(data), "-U", self.user, "--pwfile", str(pwfile),
                   "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"])
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c fsync=off"
        self._run([pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.dir / "server.log"), "-w",
                   "-t", str(READY_SECONDS), "start"])
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                dbname="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            conn.cursor().execute(f'CREATE DATABASE "{self.db}"')
        finally:
            conn.close()
        return self

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads (TLS off: a local server without certificates)."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_DB": self.db,
                "DAGSTER_PG_USERNAME": self.user, "DAGSTER_PG_PASSWORD": self.password, "PGSSLMODE": "disable"}

    def log(self) -> str:
        path = self.dir / "server.log" if self.dir else None
        return path.read_text(errors="replace")[-3000:] if path and path.exists() else ""

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            subprocess.run((["runuser", "-u", "nobody", "--"] if self.as_nobody else [])
                           + [pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except Exception:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
