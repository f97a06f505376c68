"""``cinedub correct``, ``review`` and ``review-serve``: the LLM correction and review commands (the work is in
:mod:`cinedub.llm` and :mod:`flows.review`).

- ``cinedub correct OUT``: correct unreviewed clips without a human: auto-accepted clips, guard refusals and
  request errors are written as a new shard version; the rest stay for review.
- ``cinedub review-serve``: serve the review flow as deployment ``cinedub-review/<name>`` and the clip server, on
  the Prefect server ``cinedub serve`` runs (or ``PREFECT_API_URL``); never on a throwaway one.
- ``cinedub review OUT``: start a review run on that server; the reviewer answers in the Prefect UI, page by page.

Without a reachable server the two last commands stop with one line saying how to start one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

REVIEW_DEPLOYMENTS = ("cinedub-review/review", "cinedub-review/default")  # review-serve's, then cinedub serve's


def _llm_config(config: Path | None, base_url: str | None, model: str | None) -> Any:
    from cinedub.config import Config
    from cinedub.llm.config import LlmConfig

    cfg = getattr(Config.load(config), "llm", None) or LlmConfig()
    updates = {k: v for k, v in {"base_url": base_url, "model": model}.items() if v}
    return cfg.model_copy(update=updates) if updates else cfg


def register(app: Any) -> None:
    """Add ``correct``, ``review`` and ``review-serve`` to the typer app of :mod:`cinedub_cli.main`."""

    @app.command()
    def correct(
        out: Annotated[Path, typer.Argument(help="An output folder (holding manifest.json).")],
        config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Configuration file (llm section).")] = None,
        base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1 "
                                                             "(also CINEDUB_LLM__BASE_URL).")] = None,
        model: Annotated[Optional[str], typer.Option(help="Model name (also CINEDUB_LLM__MODEL).")] = None,
        limit: Annotated[Optional[int], typer.Option(help="At most this many clips.")] = None,
        source: Annotated[Optional[str], typer.Option(help="Only this source id.")] = None,
    ) -> None:
        """Correct unreviewed clips; write auto-accepted ones, refusals and errors as a new shard version.

        A clip whose request or answer fails is recorded with its error class and asked again next time; the others
        go on. The exit code is 1 when some clips had errors.
        """
        from cinedub.llm.batch import correct_output, make_client

        cfg = _llm_config(config, base_url, model)
        loader = None
        if cfg.secret_block:
            from flows.resources import prefect_secret as loader  # the CLI may use Prefect; the core may not
        summary = correct_output(out, make_client(out, cfg, secret_loader=loader), limit=limit, source_id=source)
        typer.echo(json.dumps({k: (len(v) if isinstance(v, list) else v) for k, v in summary.items()}, indent=1))
        if summary["errors"]:
            raise typer.Exit(1)

    @app.command("review-serve")
    def review_serve(
        name: Annotated[str, typer.Option(help="Deployment name (cinedub-review/<name>).")] = "review",
        listen_port: Annotated[Optional[int], typer.Option(help="Port of the clip server on 127.0.0.1 "
                                                                "(default 4210 or CINEDUB_LISTEN_PORT).")] = None,
    ) -> None:
        """Serve the review flow and the clip server (blocks; suspended review runs resume here)."""
        from flows.review import serve_review  # finds the server like `submit`, never Prefect's throwaway one


        serve_review(name, listen_port=listen_port)

    @app.command()
    def review(
        out: Annotated[Path, typer.Argument(help="An output folder, as the serving machine sees it.")],
        deployment: Annotated[Optional[str], typer.Option(help="flow/deployment (default: review-serve's, else "
                                                               "cinedub serve's).")] = None,
        limit: Annotated[int, typer.Option(help="Clips in this review run.")] = 20,
        page_size: Annotated[int, typer.Option(help="Clips per review page.")] = 5,
        source: Annotated[Optional[str], typer.Option(help="Only this source id.")] = None,
    ) -> None:
        """Start a review run and print its page in the Prefect UI; open it and press Resume to review a page."""
        import httpx
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from cinedub.errors import ServiceUnavailableError
        from flows.local import require_server

        api = require_server()
        names = [deployment] if deployment else list(REVIEW_DEPLOYMENTS)
        found = None
        with httpx.Client(base_url=api, timeout=10) as http:
            for full in names:
                flow_name, dep = full.split("/", 1)
                if http.get(f"/deployments/name/{flow_name}/{dep}").status_code == 200:
                    found = full
                    break
        if found is None:
            raise ServiceUnavailableError(f"no review deployment ({' or '.join(names)}) on {api}: start one with "
                                          "`cinedub review-serve` (or `cinedub serve`)")
        params = {"out_dir": str(out.resolve()), "limit": limit, "page_size": page_size, "source_id": source}
        with temporary_settings(updates={PREFECT_API_URL: api}):
            run = run_deployment(found, parameters=params, timeout=0, as_subflow=False)
        typer.echo(f"review run {run.id}: {api.removesuffix('/api')}/runs/flow-run/{run.id} "
                   "(wait for 'Suspended', then Resume to review the first page)")
