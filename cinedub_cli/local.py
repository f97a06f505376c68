"""``cinedub serve``, ``submit``, ``ledger`` and ``retry``: the local-mode commands (the work is in
:mod:`flows.local` and :mod:`flows.ingest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer  # annotations of the commands below are evaluated by typer in this module's namespace

from flows.local import DEFAULT_PORT, _api, serve_local, submit


def register(app: Any) -> None:
    """Add ``serve``, ``submit``, ``ledger`` and ``retry`` to the typer app of :mod:`cinedub_cli.main`."""
    from rich.console import Console
    from rich.table import Table

    out_console = Console()

    def _config(models_dir: Optional[Path], separation: Optional[str], device: Optional[str]) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if models_dir:
            cfg["models_dir"] = str(models_dir.resolve())
        if separation:
            cfg["separation"] = {"method": separation}
        if device:
            cfg["device"] = device
        return cfg

    @app.command()
    def serve(
        port: Annotated[int, typer.Option(help="Port of the server and UI on 127.0.0.1.")] = DEFAULT_PORT,
        home: Annotated[Optional[Path], typer.Option(help="Server state (SQLite); default ~/.cinedub/prefect.")] = None,
        limit: Annotated[int, typer.Option(help="Runs the local worker takes at once.")] = 2,
        watch: Annotated[Optional[str], typer.Option(help="Glob the scheduled ingest takes ('in/**/*.mp4').")] = None,
        out: Annotated[Optional[Path], typer.Option(help="Dataset folder of the scheduled ingest.")] = None,
        cron: Annotated[str, typer.Option(help="Schedule of the ingest (with --watch).")] = "*/5 * * * *",
        models_dir: Annotated[Optional[Path], typer.Option(help="Folder of model folders.")] = None,
        separation: Annotated[Optional[str], typer.Option(help="auto, demucs, deepfilternet or none.")] = None,
    ) -> None:
        """Start Prefect (server with UI, worker, deployments) on this machine and print where to open the UI."""
        ingest = None
        if watch:
            if not out:
                raise typer.BadParameter("--watch needs --out")
            ingest = {"out_dir": str(out.resolve()), "glob": str(Path(watch).resolve()) if "://" not in watch
                      else watch, "config": _config(models_dir, separation, None)}
        serve_local(home, port, limit, ingest, cron if ingest else None)

    @app.command("submit")
    def submit_cmd(
        inputs: Annotated[list[str], typer.Argument(help="Video files, folders or URLs (s3://…).")],
        out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder (seen by every worker).")],
        models_dir: Annotated[Optional[Path], typer.Option(help="Folder of model folders.")] = None,
        separation: Annotated[Optional[str], typer.Option(help="auto, demucs, deepfilternet or none.")] = None,
        device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda.")] = None,
        retry_failed: Annotated[bool, typer.Option(help="Also resubmit inputs that failed before.")] = False,
    ) -> None:
        """Queue INPUTS for processing by the workers (the ingest deployment); prints the run's UI address."""
        run_id = submit(inputs, out, _config(models_dir, separation, device), retry_failed)
        out_console.print(f"ingest run {run_id}: {_api().removesuffix('/api')}/runs/flow-run/{run_id}")

    @app.command()
    def ledger(
        out: Annotated[str, typer.Argument(help="Dataset folder.")],
        status: Annotated[Optional[str], typer.Option(help="Only pending, running, done or failed.")] = None,
        url: Annotated[Optional[str], typer.Option(help="Ledger database (default CINEDUB_LEDGER_URL or "
                                                           "OUT/ledger.sqlite).")] = None,
    ) -> None:
        """Every source of a dataset: status, attempts, worker, clips, times, and the reason of failures."""
        from flows.ingest import ledger_table

        rows = ledger_table(out, url, status)
        table = Table(title=f"ledger of {out}: {len(rows)} sources")
        for c in ("name", "status", "attempts", "worker", "clips", "updated", "reason"):
            table.add_column(c, overflow="fold")
        for r in rows:
            color = {"done": "green", "failed": "red", "running": "yellow"}.get(r["status"], "white")
            table.add_row(r["name"], f"[{color}]{r['status']}[/{color}]", str(r["attempts"]), r["worker"],
                          "" if r["clips"] is None else str(r["clips"]), r["updated_at"], r["reason"])
        out_console.print(table)

    @app.command()
    def retry(
        out: Annotated[str, typer.Argument(help="Dataset folder.")],
        url: Annotated[Optional[str], typer.Option(help="Ledger database URL.")] = None,
    ) -> None:
        """Resubmit every failed source of OUT (after fixing the cause: a model, a disk, a file)."""
        from cinedub.ledger import FAILED, Ledger

        led = Ledger(out, url)
        failed = led.entries(FAILED)
        if not failed:
            out_console.print("no failed sources")
            return
        run_id = submit([e.uri for e in failed], out, retry_failed=True)
        out_console.print(f"{len(failed)} failed source(s) resubmitted by ingest run {run_id}")
