"""CLI commands of the LLM pass, added to ``cinedub`` by :func:`register`.

- ``cinedub correct OUT``: correct unreviewed clips without a human: auto-accepted clips and guard refusals are
  written as a new shard version, the rest stay for review.
- ``cinedub review-serve``: serve the review flow as deployment ``cinedub-review/<name>`` (needs ``PREFECT_API_URL``).
- ``cinedub review OUT``: start a review run of that deployment; the reviewer answers in the Prefect UI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer


def _llm_config(config: Path | None, base_url: str | None, model: str | None):
    from cinedub.config import Config
    from cinedub.llm.config import LlmConfig

    cfg = getattr(Config.load(config), "llm", None) or LlmConfig()
    updates = {k: v for k, v in {"base_url": base_url, "model": model}.items() if v}
    return cfg.model_copy(update=updates) if updates else cfg


def register(app: typer.Typer) -> None:
    """Add ``correct``, ``review`` and ``review-serve`` to the ``cinedub`` command line."""

    @app.command()
    def correct(
        out: Annotated[Path, typer.Argument(help="An output folder (holding manifest.json).")],
        config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Configuration file (llm section).")] = None,
        base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1.")] = None,
        model: Annotated[Optional[str], typer.Option(help="Model name.")] = None,
        limit: Annotated[Optional[int], typer.Option(help="At most this many clips.")] = None,
        source: Annotated[Optional[str], typer.Option(help="Only this source id.")] = None,
    ) -> None:
        """Correct unreviewed clips; write auto-accepted ones and refusals as a new shard version."""
        from cinedub.llm.batch import correct_output, make_client

        cfg = _llm_config(config, base_url, model)
        summary = correct_output(out, make_client(out, cfg), limit=limit, source_id=source)
        typer.echo(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in summary.items()}, indent=1))
        if summary["errors"]:
            raise typer.Exit(1)

    @app.command("review-serve")
    def review_serve(name: Annotated[str, typer.Option(help="Deployment name.")] = "review") -> None:
        """Serve the review flow (blocks; suspended runs resume here)."""
        from flows.review import serve_review

        serve_review(name)

    @app.command()
    def review(
        out: Annotated[Path, typer.Argument(help="An output folder, as the serving machine sees it.")],
        deployment: Annotated[str, typer.Option(help="flow/deployment name.")] = "cinedub-review/review",
        limit: Annotated[int, typer.Option(help="Clips per review batch.")] = 20,
        source: Annotated[Optional[str], typer.Option(help="Only this source id.")] = None,
    ) -> None:
        """Start a review run; open the printed URL to review the diffs and resume the run."""
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_UI_URL

        params = {"out_dir": str(out.resolve()), "limit": limit, "source_id": source}
        run = run_deployment(deployment, parameters=params, timeout=0)
        typer.echo(f"review run {run.id}: {PREFECT_UI_URL.value()}/runs/flow-run/{run.id}")
