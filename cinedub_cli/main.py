"""The ``cinedub`` command line (typer).

``cinedub run INPUT... --out DIR`` runs the pipeline through Prefect (no server needed; set ``PREFECT_API_URL`` to
use one), ``cinedub inspect DIR`` summarises shards, ``cinedub models`` lists the model folders present and
missing, ``cinedub mux`` joins a picture-only video with a separate audio file.

Every command ends a failure with one line (``cinedub: <file>: <stage>: <reason>``) and exit code 1 (2 for bad
usage or configuration); ``-v`` (before the command: ``cinedub -v run ...``) adds DEBUG logs, third-party output
and tracebacks.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from cinedub_cli.console import RichProgress, terminal

app = typer.Typer(
    help="CineDub: film and TV footage in, Parquet training shards for movie-dubbing models out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()
STATE = {"verbose": False}


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs, third-party output and tracebacks.")]
    = False,
) -> None:
    STATE["verbose"] = verbose


def main() -> None:
    """Entry point of ``cinedub``: runs the app; an error ends in one line (a traceback only with ``-v``)."""
    import click
    from pydantic import ValidationError

    from cinedub.errors import CineDubError

    try:
        rc = app(standalone_mode=False)  # returns the code of a typer.Exit
        sys.exit(rc if isinstance(rc, int) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        console.print("cinedub: aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("cinedub: interrupted")
        sys.exit(130)
    except (CineDubError, OSError, ValueError, ValidationError) as e:
        if STATE["verbose"]:
            console.print_exception()
        console.print(f"[red]cinedub: {one_line(e)}[/red]", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - a bug: one line, the traceback with -v
        if STATE["verbose"]:
            console.print_exception()
        console.print(f"[red]cinedub: {type(e).__name__}: {one_line(e)} (run with -v for the traceback)[/red]",
                      highlight=False, soft_wrap=True)
        sys.exit(1)


def one_line(e: BaseException) -> str:
    """An exception's message on one line (pydantic's multi-line errors joined)."""
    text = str(e) or type(e).__name__
    if isinstance(e, FileNotFoundError) and e.filename:
        text = f"{e.filename}: file not found"
    return " ".join(part.strip() for part in text.splitlines() if part.strip())

ConfigOpt = Annotated[
    Optional[Path], typer.Option("--config", "-c", help="YAML or TOML configuration file (also CINEDUB_CONFIG).")
]
ModelsOpt = Annotated[
    Optional[Path], typer.Option("--models-dir", help="Folder of model folders (also CINEDUB_MODELS_DIR).")
]


def _load_config(config: Path | None, **overrides):
    from pydantic import ValidationError

    from cinedub.config import Config

    try:
        return Config.load(config, **overrides)
    except (ValidationError, FileNotFoundError, ValueError) as e:
        console.print(f"[red]configuration error:[/red] {e}")
        raise typer.Exit(2) from None


MEDIA_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mxf"}


def _expand_inputs(inputs: list[Path]) -> list[str]:
    out: list[str] = []
    for p in inputs:
        if p.is_dir():
            out += [str(f) for f in sorted(p.rglob("*")) if f.suffix.lower() in MEDIA_SUFFIXES and f.is_file()]
        else:
            out.append(str(p))
    return out


def _preflight(cfg) -> None:
    """Fail before any work when a model the run needs is missing (and the hub is not allowed)."""
    from cinedub.errors import ModelNotFoundError
    from cinedub.models import resolve_model_dir

    if cfg.allow_hub:
        return
    from cinedub.models import separation_backend

    backend = separation_backend(cfg)
    needed = ["whisper"] + ([backend] if backend != "none" else [])
    for key in needed:
        try:
            resolve_model_dir(cfg, key)
        except ModelNotFoundError as e:
            hint = " (or run with --separation none to use the mix)" if key in ("demucs", "deepfilternet") else ""
            console.print(f"[red]{e}[/red]{hint}")
            raise typer.Exit(2) from None


@app.command()
def run(
    inputs: Annotated[list[Path], typer.Argument(help="Media files or folders (searched for video files).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for shards, manifest and run reports.")],
    config: ConfigOpt = None,
    models_dir: ModelsOpt = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    languages: Annotated[Optional[str], typer.Option(help="Allowed languages, comma-separated (e.g. zh,en).")] = None,
    separation: Annotated[Optional[str], typer.Option(
        help="auto (demucs when its weights are present, else DeepFilterNet 3), demucs, deepfilternet, or none "
             "(use the mix).")] = None,
    visual: Annotated[Optional[bool], typer.Option("--visual/--no-visual", help="Faces, lips and ASD.")] = None,
    diarization: Annotated[Optional[bool], typer.Option("--diarization/--no-diarization", help="Speaker diarization.")] = None,
    concurrent_sources: Annotated[Optional[int], typer.Option(
        min=1, help="Sources processed at once (default 4: the next sources' stages overlap this one's; each "
                    "stage takes one source at a time). 1 = one after another.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars per source and stage.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs and third-party output.")] = False,
) -> None:
    """Run the pipeline on INPUTS and write shards to --out. Reruns reuse every finished stage.

    A bad input (not media, truncated, no audio or no video) is reported and skipped; the others go on.
    The exit code is 0 when every input succeeded, 1 when some failed. Without -v the terminal shows the progress
    and the summary only; everything else is logged to OUT/runs/cinedub-run.log.
    """
    verbose = verbose or STATE["verbose"]
    overrides: dict = {"models_dir": models_dir, "device": device, "languages": languages, "run_visual": visual,
                       "run_diarization": diarization, "concurrent_sources": concurrent_sources}
    if separation:
        overrides["separation"] = {"method": separation}
    cfg = _load_config(config, **overrides)
    if separation and config:  # keep the file's other separation options
        cfg = cfg.model_copy(update={"separation": cfg.separation.model_copy(update={"method": separation})})
    _preflight(cfg)
    paths = _expand_inputs(inputs)
    if not paths:
        console.print("[red]cinedub: no inputs found[/red]")
        raise typer.Exit(2)

    from contextlib import nullcontext

    from flows.early_api import EarlyApi, configure_prefect_env

    configure_prefect_env(out)
    # no server given: start the run's temporary API now, so it boots while the pipeline's modules are imported
    api = EarlyApi() if not os.environ.get("PREFECT_API_URL") else nullcontext()
    with terminal(verbose, Path(out) / "runs", "cinedub-run") as term:
        for noisy in ("httpx", "httpcore", "pyscenedetect", "faster_whisper"):
            logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
        from flows.pipeline import run_pipeline

        with api:
            if progress:
                with RichProgress(term.console, len(paths)):
                    result = run_pipeline(paths, str(out), cfg)
            else:
                result = run_pipeline(paths, str(out), cfg)
    table = Table(title=f"cinedub run: {result['total_clips']} clips in {result['shards']} shards ({out})")
    for col in ("input", "status", "clips", "language", "speech in clips", "reason"):
        table.add_column(col)
    for r in result["inputs"]:
        table.add_row(
            Path(r["input"]).name,
            {"ok": "[green]ok[/green]", "failed": "[red]failed[/red]"}.get(r["status"], f"[yellow]{r['status']}[/yellow]"),
            str(r.get("clips", "")),
            str(r.get("language", "")),
            _speech_cell(r),
            "; ".join(x for x in (r.get("reason", ""), _damage_note(r)) if x),
        )
    out_console.print(table)
    out_console.print(f"report: {result['report']}" + (f"; log: {term.log_path}" if term.log_path else ""))
    if any(r["status"] == "failed" for r in result["inputs"]):
        raise typer.Exit(1)


@app.command()
def inspect(
    out: Annotated[Path, typer.Argument(help="An output folder (holding manifest.json).")],
    clips: Annotated[int, typer.Option("--clips", "-n", help="Clips to list (0 = none, -1 = all).")] = 20,
    source: Annotated[Optional[str], typer.Option(help="Only this source id.")] = None,
    render: Annotated[Optional[str], typer.Option(help="Write a contact sheet PNG of this clip id (boxes, lips, "
                                                       "track ids, ASD scores) instead of the summary.")] = None,
    render_to: Annotated[Optional[Path], typer.Option(help="PNG path for --render (default OUT/render/<clip>.png).")] = None,
    video: Annotated[Optional[Path], typer.Option(help="Source video for --render (default: from the run reports).")] = None,
) -> None:
    """Summarise the shards in OUT: shards, clips, hours, languages, and a list of clips with text and times."""
    from cinedub.errors import CineDubError, SchemaVersionError
    from cinedub.reader import ShardReader

    if render:
        from cinedub.render import render_clip

        try:
            path = render_clip(out, render, render_to or out / "render" / f"{render}.png", source=video)
        except CineDubError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
        out_console.print(str(path))
        return

    try:
        reader = ShardReader(out)
    except (FileNotFoundError, SchemaVersionError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    m = reader.manifest
    cols = ["clip_id", "source_id", "episode", "clip_index", "start_ms", "end_ms", "duration_ms", "language", "text",
            "split", "shot_boundaries_ms"]
    table = reader.table(columns=cols, source_id=source)
    rows = table.to_pylist()
    total_ms = sum(r["duration_ms"] for r in rows)
    langs: dict[str, int] = {}
    per_source: dict[str, list] = {}
    for r in rows:
        langs[r["language"]] = langs.get(r["language"], 0) + 1
        per_source.setdefault(r["source_id"], []).append(r)
    out_console.print(
        f"[bold]{out}[/bold]: schema {m['schema_version']}, {len(m['shards'])} shards, {m['total_rows']} clips, "
        f"{m['total_bytes'] / 1e6:.1f} MB, {total_ms / 3.6e6:.3f} h of speech; languages "
        + ", ".join(f"{k}: {v}" for k, v in sorted(langs.items(), key=lambda kv: str(kv[0])))
    )
    statuses = _last_statuses(out)
    if statuses:
        counts: dict[str, int] = {}
        for r in statuses.values():
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        out_console.print("inputs by status (latest run report of each): "
                          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for r in statuses.values():
            if r["status"] != "ok":
                out_console.print(f"  {Path(r['input']).name}: {r['status']}: {r.get('reason', '')}", highlight=False)
            elif _damage_note(r):
                out_console.print(f"  {Path(r['input']).name}: ok, {_damage_note(r)}", highlight=False)
        speech = [r["speech"] for r in statuses.values() if (r.get("speech") or {}).get("detected_ms")]
        if speech:
            total = sum(sp["detected_ms"] for sp in speech)
            inside = sum(sp["detected_ms"] * sp["in_clips"] for sp in speech)
            told = sum(sp["detected_ms"] * (sp.get("in_clips_or_reported") or sp["in_clips"]) for sp in speech)
            out_console.print(f"detected speech in clips: {100 * inside / total:.1f} % of {total / 3.6e6:.3f} h "
                              f"({100 * told / total:.1f} % in clips or reported with a reason; reasons in the run "
                              "reports)")
    from cinedub.card import dataset_stats

    st_rows = reader.table(columns=[c for c in ("split", "language", "duration_ms", "scene_type",
                                                 "scene_type_candidates", "turns", "source_id")]).to_pylist()
    stats = dataset_stats(st_rows, [None] * len(st_rows))
    out_console.print(f"hours by split {stats['hours_by']['split']}; by scene type {stats['hours_by']['scene_type']}; "
                      f"speakers per clip {stats['speakers_per_clip']}; on screen {stats['on_screen_share']}")
    st = Table(title="sources")
    for c in ("source_id", "episode", "clips", "speech s", "split"):
        st.add_column(c)
    for sid, rs in per_source.items():
        st.add_row(sid, rs[0]["episode"], str(len(rs)), f"{sum(r['duration_ms'] for r in rs) / 1000:.1f}", rs[0]["split"])
    out_console.print(st)
    if clips:
        ct = Table(title="clips")
        for c in ("episode", "#", "start", "end", "lang", "cuts", "text"):
            ct.add_column(c, overflow="fold")
        shown = rows if clips < 0 else rows[:clips]
        for r in sorted(shown, key=lambda r: (r["episode"], r["clip_index"])):
            ct.add_row(
                r["episode"],
                str(r["clip_index"]),
                f"{r['start_ms'] / 1000:.3f}",
                f"{r['end_ms'] / 1000:.3f}",
                r["language"],
                str(len(r["shot_boundaries_ms"] or [])),
                r["text"],
            )
        out_console.print(ct)


def _speech_cell(entry: dict) -> str:
    """``"97.1 % (+2.9 % reported)"``: the share of a source's detected speech in clips, and outside them with a
    reason (run report ``speech``)."""
    sp = entry.get("speech") or {}
    if sp.get("in_clips") is None:
        return ""
    extra = (sp.get("in_clips_or_reported") or 0) - sp["in_clips"]
    return f"{100 * sp['in_clips']:.1f} %" + (f" (+{100 * extra:.1f} % reported)" if extra > 0.0005 else "")


def _damage_note(entry: dict) -> str:
    """``"decoded through corrupt data: audio_packets 7, video_packets 1"`` (run report ``decode_errors``)."""
    damage = entry.get("decode_errors") or {}
    return ("decoded through corrupt data: " + ", ".join(f"{k} {v}" for k, v in damage.items())) if damage else ""


def _last_statuses(out: Path) -> dict[str, dict]:
    """The newest run-report entry of every input of ``out`` (``runs/*.json``, oldest first)."""
    import json

    latest: dict[str, dict] = {}
    for path in sorted((out / "runs").glob("*.json")):
        try:
            for entry in json.loads(path.read_text(encoding="utf-8")).get("inputs", []):
                latest[entry["input"]] = entry
        except (OSError, ValueError, KeyError):
            continue
    return latest


@app.command()
def models(config: ConfigOpt = None, models_dir: ModelsOpt = None) -> None:
    """List the models the configuration uses: present, or missing with how to get them."""
    from cinedub.models import model_status

    cfg = _load_config(config, models_dir=models_dir)
    table = Table(title=f"models in {cfg.models_dir}")
    for c in ("model", "stage", "folder", "status", "how to get it"):
        table.add_column(c, overflow="fold")
    missing_required = False
    for spec, folder, missing in model_status(cfg):
        if missing:
            status = "[yellow]missing (optional)[/yellow]" if spec.optional else "[red]missing[/red]"
            missing_required |= not spec.optional
        else:
            status = "[green]present[/green]"
        table.add_row(spec.key, spec.stage, str(folder), status + ("" if not missing else f": {', '.join(missing)}"),
                      "" if not missing else spec.hub)
    out_console.print(table)
    if missing_required:
        raise typer.Exit(1)


@app.command("export-rttm")
def export_rttm(
    out: Annotated[Path, typer.Argument(help="An output folder (holding manifest.json).")],
    dest: Annotated[Optional[Path], typer.Option(help="Folder for the RTTM files (default OUT/rttm).")] = None,
) -> None:
    """Write one RTTM per source from the speaker turns in the shards (speaker ids as in the shards)."""
    from cinedub.diarization.rttm import write_rttm
    from cinedub.reader import ShardReader
    from cinedub.types import Turn

    reader = ShardReader(out)
    dest = dest or out / "rttm"
    by_source: dict[tuple[str, str], list[Turn]] = {}
    for r in reader.table(columns=["source_id", "episode", "turns"]).to_pylist():
        by_source.setdefault((r["source_id"], r["episode"]), []).extend(Turn.from_dict(t) for t in r["turns"] or [])
    for (source_id, episode), turns in sorted(by_source.items()):
        merged: list[Turn] = []
        for t in sorted(turns, key=lambda t: (t.start_ms, t.speaker_id)):
            last = next((m for m in reversed(merged) if m.speaker_id == t.speaker_id), None)
            if last is not None and t.start_ms <= last.end_ms:  # a turn cut in two by a clip boundary
                merged[merged.index(last)] = Turn(last.start_ms, max(last.end_ms, t.end_ms), t.speaker_id,
                                                  last.on_screen, last.face_track_id, last.overlap or t.overlap)
            else:
                merged.append(t)
        path = write_rttm(dest / f"{episode}.{source_id}.rttm", merged, episode)
        out_console.print(f"{path}  ({len(merged)} turns, {len({t.speaker_id for t in merged})} speakers)")


@app.command()
def der(
    reference: Annotated[Path, typer.Argument(help="Reference RTTM.")],
    hypothesis: Annotated[Path, typer.Argument(help="Hypothesis RTTM (e.g. from cinedub export-rttm).")],
    collar: Annotated[float, typer.Option(help="Total collar width in s (pyannote.metrics: 0.25 forgives +-0.125 s).")] = 0.25,
    skip_overlap: Annotated[bool, typer.Option(help="Do not score overlapping speech.")] = False,
) -> None:
    """Print DER and JER (pyannote.metrics) of HYPOTHESIS against REFERENCE; the file ids need not match."""
    from cinedub.diarization.rttm import read_rttm
    from cinedub.eval.diarization import score

    ref, hyp = read_rttm(reference), read_rttm(hypothesis)
    s = score(ref, hyp, collar_s=collar, skip_overlap=skip_overlap)
    out_console.print(
        f"DER {s.der:.2%}  JER {s.jer:.2%}  (collar {collar} s total, overlap {'skipped' if skip_overlap else 'scored'}; "
        f"{len({t.speaker_id for t in ref})} reference speakers, {len({t.speaker_id for t in hyp})} found)"
    )


@app.command("eval-av")
def eval_av(
    truth: Annotated[Path, typer.Argument(help="Truth JSON of on-screen positions (twoshot_dev / dialogue_5shots / asd_groups format).")],
    hypothesis: Annotated[Path, typer.Argument(help="Fused timeline JSON (the fuse step's DiarizationResult).")],
    faces: Annotated[Optional[Path], typer.Option(help="The faces stage's faces.json (boxes per frame).")] = None,
    rttm: Annotated[Optional[Path], typer.Option(help="Reference RTTM (none for the group clips).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Clip name inside a groups truth file (e.g. grp_c0).")] = None,
    collar: Annotated[float, typer.Option(help="Total DER collar in s (0.25 forgives +-0.125 s).")] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """DER/JER, speakers found, face attribution per frame and one id per person across shots (cinedub.eval.av)."""
    import json

    from cinedub.eval.av import evaluate_files

    try:
        scores, text = evaluate_files(truth, hypothesis, faces_path=faces, rttm_path=rttm, name=name, collar_s=collar)
    except (OSError, ValueError) as e:
        console.print(f"[red]eval-av:[/red] {e}")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(scores.to_dict()) if as_json else text)


@app.command()
def mux(
    video: Annotated[Path, typer.Argument(help="File whose video stream is kept.")],
    audio: Annotated[Path, typer.Argument(help="File whose audio is added.")],
    out: Annotated[Path, typer.Argument(help="Output file (e.g. out.mp4).")],
) -> None:
    """Join a picture-only video with a separate audio file (video copied, audio AAC, shortest wins)."""
    from cinedub.media import mux_video_audio

    mux_video_audio(video, audio, out)
    out_console.print(str(out))


from cinedub_cli.local import register as _register_ops  # noqa: E402  (serve, submit, ledger, retry)

_register_ops(app)

from cinedub_cli.llm import register as _register_llm  # noqa: E402  (correct, review, review-serve)

_register_llm(app)


if __name__ == "__main__":  # pragma: no cover
    main()
