"""The ledger of sources: which inputs of a dataset are pending, running, done or failed (with the reason).

One row per (dataset, source key). The dataset is the output folder's absolute path; the key is the source's SHA-256
(content hash for local files; for object-store files, the hash of URI, size and ETag, see :mod:`flows.ingest`).
The ledger lives in a database so that it survives restarts and is shared by every machine:

- SQLite (default): ``<out_dir>/ledger.sqlite``, fine for one machine (WAL journal, 30 s busy timeout);
- PostgreSQL: any SQLAlchemy URL, e.g. the Prefect server's own database
  (``postgresql://prefect:pw@db:5432/prefect``; the table ``cinedub_sources`` sits beside Prefect's tables).
  Set it with ``CINEDUB_LEDGER_URL`` or the flows' ``ledger_url`` parameter.

States::

    pending  --(worker starts the run)-->  running  --> done
       ^                                      |
       +---- (ingest resubmits: attempts+1) <-+--> failed (reason)

Every change of a run's row names the Prefect flow run it comes from; a change from a run that is no longer the
row's run (a zombie that woke up after it was replaced) is ignored, so a newer attempt is never overwritten.

Only SQLAlchemy Core with the async drivers Prefect already installs (aiosqlite, asyncpg) is used; each call runs
its own short event loop (the ledger is touched a few times per source, never in a hot loop).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATUSES = (PENDING, RUNNING, DONE, FAILED)
LEDGER_FILE = "ledger.sqlite"
ENV_URL = "CINEDUB_LEDGER_URL"

_meta = sa.MetaData()
sources = sa.Table(
    "cinedub_sources",
    _meta,
    sa.Column("dataset", sa.String(1024), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("name", sa.String(512), nullable=False, default=""),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("mtime_ns", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, default=PENDING),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("flow_run_id", sa.String(64), nullable=True),
    sa.Column("worker", sa.String(256), nullable=False, default=""),
    sa.Column("source_id", sa.String(32), nullable=False, default=""),
    sa.Column("clips", sa.Integer, nullable=True),
    sa.Column("config", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_cinedub_sources_status", "dataset", "status"),
    sa.Index("ix_cinedub_sources_uri", "dataset", "uri"),
)

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(v: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they were written in UTC."""
    if v is not None and v.tzinfo is None:
        return v.replace(tzinfo=timezone.utc)
    return v


@dataclass(frozen=True)
class Entry:
    """One source of a dataset as the ledger knows it (times are UTC; ``clips`` is set once done)."""

    dataset: str
    key: str
    uri: str
    name: str
    size: int | None
    mtime_ns: int | None
    status: str
    reason: str
    attempts: int
    flow_run_id: str | None
    worker: str
    source_id: str
    clips: int | None
    config: str
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def _from_row(cls, row: Any) -> "Entry":
        d = dict(row._mapping)
        for k in ("created_at", "updated_at", "submitted_at", "started_at", "heartbeat_at", "finished_at"):
            d[k] = _utc(d[k])
        return cls(**d)

    @property
    def tries(self) -> int:
        """Runs of this source so far: the failed ones (``attempts``, which also key resubmissions) plus the one
        running or done now."""
        return self.attempts + (1 if self.status in (RUNNING, DONE) else 0)

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-able values; ``attempts`` is :attr:`tries` (what a reader means by attempts)."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, datetime):
                d[k] = v.isoformat(timespec="seconds")
        d["failed_attempts"], d["attempts"] = self.attempts, self.tries
        return d

    def last_sign_of_life(self) -> datetime | None:
        """The newest of heartbeat, start and submission: how long ago the run last showed it was alive."""
        times = [t for t in (self.heartbeat_at, self.started_at, self.submitted_at) if t is not None]
        return max(times) if times else None


def normalize_url(url: str) -> str:
    """Map plain SQLAlchemy URLs to the async drivers Prefect ships (``sqlite`` -> aiosqlite, ``postgresql`` ->
    asyncpg); a path without a scheme is a SQLite file."""
    if "://" not in url:
        return f"sqlite+aiosqlite:///{Path(url).resolve()}"
    scheme, rest = url.split("://", 1)
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        return f"sqlite+aiosqlite://{rest}"
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ValueError(f"ledger URL must be sqlite:// or postgresql://, not {scheme}://")


def default_url(out_dir: str | Path) -> str:
    """``CINEDUB_LEDGER_URL`` when set, else ``<out_dir>/ledger.sqlite``."""
    return os.environ.get(ENV_URL) or f"sqlite:///{(Path(out_dir) / LEDGER_FILE).resolve()}"


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when the calling thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target, name="cinedub-ledger")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


class Ledger:
    """The ledger of one dataset.

    Args:
        out_dir: the dataset's output folder (its absolute path names the dataset in the table).
        url: SQLAlchemy URL (``sqlite:///…`` or ``postgresql://…``) or a SQLite file path; default
            :func:`default_url`.

    Raises:
        ValueError: an unsupported URL scheme.
    """

    def __init__(self, out_dir: str | Path, url: str | None = None):
        self.dataset = str(Path(out_dir).resolve())
        self.url = url or default_url(out_dir)
        self._async_url = normalize_url(self.url)
        self._sqlite = self._async_url.startswith("sqlite")
        if self._sqlite:
            db = self._async_url.split(":///", 1)[1]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        self._ready = False

    def _engine(self) -> AsyncEngine:
        kwargs: dict[str, Any] = {"poolclass": NullPool}
        if self._sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        return create_async_engine(self._async_url, **kwargs)

    def _call(self, op: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def main() -> T:
            engine = self._engine()
            try:
                if not self._ready:
                    await self._create(engine)
                async with engine.begin() as conn:
                    if self._sqlite:
                        await conn.exec_driver_sql("PRAGMA busy_timeout=30000")
                    return await op(conn)
            finally:
                await engine.dispose()

        return _run(main)

    async def _create(self, engine: AsyncEngine) -> None:
        for attempt in range(3):  # two machines creating the table at once: one wins, the other sees it
            try:
                async with engine.begin() as conn:
                    if self._sqlite:
                        await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                    await conn.run_sync(_meta.create_all, checkfirst=True)
                self._ready = True
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    def _where(self, key: str) -> Any:
        return sa.and_(sources.c.dataset == self.dataset, sources.c.key == key)

    # --- reading -------------------------------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The row of ``key``, or None."""

        async def op(conn: AsyncConnection) -> Entry | None:
            row = (await conn.execute(sa.select(sources).where(self._where(key)))).first()
            return Entry._from_row(row) if row else None

        return self._call(op)

    def entries(self, status: str | None = None) -> list[Entry]:
        """Every row of the dataset (optionally of one status), oldest first."""

        async def op(conn: AsyncConnection) -> list[Entry]:
            q = sa.select(sources).where(sources.c.dataset == self.dataset)
            if status:
                q = q.where(sources.c.status == status)
            rows = (await conn.execute(q.order_by(sources.c.created_at, sources.c.key))).all()
            return [Entry._from_row(r) for r in rows]

        return self._call(op)

    def counts(self) -> dict[str, int]:
        """Rows per status (every status present, zero when none)."""
        out = dict.fromkeys(STATUSES, 0)
        for e in self.entries():
            out[e.status] = out.get(e.status, 0) + 1
        return out

    def known_key(self, uri: str, size: int, mtime_ns: int) -> str | None:
        """The key recorded for ``uri`` when its size and mtime are unchanged (saves re-hashing big files)."""

        async def op(conn: AsyncConnection) -> str | None:
            q = sa.select(sources.c.key).where(
                sources.c.dataset == self.dataset, sources.c.uri == uri, sources.c.size == size,
                sources.c.mtime_ns == mtime_ns,
            )
            row = (await conn.execute(q)).first()
            return row[0] if row else None

        return self._call(op)

    # --- writing -------------------------------------------------------------------------------------------------

    def add(self, key: str, uri: str, name: str = "", size: int | None = None, mtime_ns: int | None = None) -> Entry:
        """Record a source as ``pending`` unless the ledger already has it (then its row is returned unchanged,
        except that a new size/mtime of the same file with the same content is remembered). The same content under
        another name keeps the first name: a copy is not processed twice."""

        async def op(conn: AsyncConnection) -> Entry:
            row = (await conn.execute(sa.select(sources).where(self._where(key)))).first()
            now = _now()
            if row is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(sources.insert().values(
                            dataset=self.dataset, key=key, uri=uri, name=name or Path(uri).name, size=size,
                            mtime_ns=mtime_ns, status=PENDING, reason="", attempts=0, worker="", source_id="",
                            config="{}", created_at=now, updated_at=now,
                        ))
                except IntegrityError:  # another ingest added it a moment ago
                    pass
            elif row.uri == uri and (row.size, row.mtime_ns) != (size, mtime_ns):  # touched, same content
                await conn.execute(sources.update().where(self._where(key)).values(size=size, mtime_ns=mtime_ns))
            row = (await conn.execute(sa.select(sources).where(self._where(key)))).first()
            return Entry._from_row(row)

        return self._call(op)

    def _update(self, key: str, values: dict[str, Any], only_run: str | None = None,
                only_status: tuple[str, ...] | None = None) -> bool:
        async def op(conn: AsyncConnection) -> bool:
            cond = self._where(key)
            if only_run is not None:
                cond = sa.and_(cond, sa.or_(sources.c.flow_run_id == only_run, sources.c.flow_run_id.is_(None)))
            if only_status is not None:
                cond = sa.and_(cond, sources.c.status.in_(only_status))
            res = await conn.execute(sources.update().where(cond).values(updated_at=_now(), **values))
            return res.rowcount > 0

        return self._call(op)

    def mark_submitted(self, key: str, flow_run_id: str, config: dict[str, Any] | None = None) -> bool:
        """A flow run was created for the source (it is ``pending`` until a worker starts it); ``config`` (the
        run's Config overrides) is kept so a later retry runs with the same options."""
        values: dict[str, Any] = {"status": PENDING, "flow_run_id": flow_run_id, "reason": "", "submitted_at": _now()}
        if config is not None:
            values["config"] = json.dumps(config, sort_keys=True)
        return self._update(key, values, only_status=(PENDING, FAILED))

    def mark_running(self, key: str, flow_run_id: str, worker: str) -> bool:
        """A worker started the source's run. False when the row now belongs to another run (this one is stale)."""
        now = _now()
        return self._update(key, {"status": RUNNING, "flow_run_id": flow_run_id, "worker": worker, "reason": "",
                                  "started_at": now, "heartbeat_at": now, "finished_at": None},
                            only_run=flow_run_id)

    def heartbeat(self, key: str, flow_run_id: str) -> bool:
        """The run is still alive (called every few seconds by the run)."""
        return self._update(key, {"heartbeat_at": _now()}, only_run=flow_run_id, only_status=(RUNNING,))

    def mark_done(self, key: str, flow_run_id: str | None, source_id: str, clips: int) -> bool:
        """The source's shards are written and listed in the manifest."""
        return self._update(key, {"status": DONE, "source_id": source_id, "clips": clips, "reason": "",
                                  "finished_at": _now()}, only_run=flow_run_id)

    def mark_failed(self, key: str, reason: str, flow_run_id: str | None = None) -> bool:
        """The run failed (or was found dead): record why and count the attempt, so the next submission gets a
        new idempotency key."""

        async def op(conn: AsyncConnection) -> bool:
            cond = sa.and_(self._where(key), sources.c.status != FAILED)
            if flow_run_id is not None:
                cond = sa.and_(cond, sa.or_(sources.c.flow_run_id == flow_run_id, sources.c.flow_run_id.is_(None)))
            res = await conn.execute(sources.update().where(cond).values(
                status=FAILED, reason=reason[:4000], attempts=sources.c.attempts + 1, finished_at=_now(),
                updated_at=_now(),
            ))
            return res.rowcount > 0

        return self._call(op)

    def reset(self, key: str) -> bool:
        """Put a failed source back to ``pending`` (an operator retry; attempts are kept)."""
        return self._update(key, {"status": PENDING, "reason": "", "flow_run_id": None}, only_status=(FAILED,))
