"""The output folder explains itself: a Hugging Face dataset card (``README.md``), statistics and plots.

:func:`write_card` reads the newest shard version (:class:`cinedub.reader.ShardReader`) and writes, atomically:

- ``stats.json``: clips and hours per language, scene type and split; the clip duration histogram; speakers per
  clip; the on-screen share of speech; correction outcomes;
- ``plots/*.png`` (matplotlib, headless);
- ``README.md`` with YAML metadata: ``configs`` whose ``data_files`` map train / dev / test to the newest version's
  shards only (so ``datasets.load_dataset(out)`` gives each clip once, in its split; older versions stay readable
  with ``ShardReader(out, version=N)``), languages, size category, task tags, the license the user set
  (``shards.license``), then the statistics with the plots and a "Data fields" section generated from
  :data:`cinedub.schema.FIELDS`.

It runs after every pipeline run and after every correction or review that writes a version.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from cinedub.atomic import atomic_path, write_json_atomic, write_text_atomic

CARD = "README.md"
STATS = "stats.json"
PLOTS = "plots"
SPLITS = ("train", "dev", "test")
_LIGHT = ["split", "language", "duration_ms", "scene_type", "scene_type_candidates", "turns", "source_id"]
DURATION_BINS_S = (0, 2, 5, 10, 15, 20, 25, 30)


def _size_category(n: int) -> str:
    for lim, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < lim:
            return name
    return "1M<n<10M"


def _scene(r: dict[str, Any]) -> str:
    if r.get("scene_type"):
        return r["scene_type"]
    cands = r.get("scene_type_candidates") or []
    return cands[0] if cands else "unknown"


def dataset_stats(rows: list[dict[str, Any]], corrections: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Statistics of clip rows (the :data:`_LIGHT` columns): hours per language, scene type and split, duration
    histogram (s), speakers per clip, on-screen share of turn time, correction outcomes."""
    hours: dict[str, Counter] = {"language": Counter(), "scene_type": Counter(), "split": Counter()}
    clips: dict[str, Counter] = {"language": Counter(), "scene_type": Counter(), "split": Counter()}
    hist = Counter()
    speakers = Counter()
    on_ms = off_ms = unknown_ms = 0
    for r in rows:
        h = r["duration_ms"] / 3.6e6
        for key, val in (("language", r.get("language") or "none"), ("scene_type", _scene(r)),
                         ("split", r.get("split") or "train")):
            hours[key][val] += h
            clips[key][val] += 1
        s = r["duration_ms"] / 1000
        lo = max(b for b in DURATION_BINS_S if b <= s) if s >= 0 else 0
        hist[str(lo)] += 1
        turns = r.get("turns") or []
        speakers[str(len({t["speaker_id"] for t in turns}))] += 1
        for t in turns:
            d = t["end_ms"] - t["start_ms"]
            if t.get("on_screen") is True:
                on_ms += d
            elif t.get("on_screen") is False:
                off_ms += d
            else:
                unknown_ms += d
    total_turn = on_ms + off_ms + unknown_ms
    outcomes = Counter((c or {}).get("status") or "none" for c in corrections)
    return {
        "clips": len(rows),
        "sources": len({r["source_id"] for r in rows}),
        "hours": round(sum(r["duration_ms"] for r in rows) / 3.6e6, 4),
        "hours_by": {k: {a: round(b, 4) for a, b in sorted(v.items())} for k, v in hours.items()},
        "clips_by": {k: dict(sorted(v.items())) for k, v in clips.items()},
        "duration_histogram_s": {f"{b}-": hist.get(str(b), 0) for b in DURATION_BINS_S},
        "speakers_per_clip": dict(sorted(speakers.items(), key=lambda kv: int(kv[0]))),
        "on_screen_share": round(on_ms / total_turn, 4) if total_turn else None,
        "off_screen_share": round(off_ms / total_turn, 4) if total_turn else None,
        "unknown_screen_share": round(unknown_ms / total_turn, 4) if total_turn else None,
        "correction_outcomes": dict(sorted(outcomes.items())),
    }


def _plots(stats: dict[str, Any], folder: Path) -> list[str]:
    """PNG plots of the statistics in ``folder``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, name: str) -> None:
        with atomic_path(folder / name, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=80, bbox_inches="tight", metadata={"Software": None})  # no version/time stamp
        plt.close(fig)
        made.append(name)

    fig, ax = plt.subplots(figsize=(5, 3))
    h = stats["duration_histogram_s"]
    ax.bar(list(h), list(h.values()), color="#4c72b0")
    ax.set_xlabel("clip duration (s, bin start)")
    ax.set_ylabel("clips")
    save(fig, "durations.png")
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, key in zip(axes, ("language", "scene_type", "split")):
        v = stats["hours_by"][key]
        ax.bar(list(v), list(v.values()), color="#55a868")
        ax.set_title(f"hours by {key}")
    save(fig, "hours.png")
    fig, ax = plt.subplots(figsize=(5, 3))
    sp = stats["speakers_per_clip"]
    ax.bar(list(sp), list(sp.values()), color="#c44e52")
    ax.set_xlabel("speakers in the clip")
    ax.set_ylabel("clips")
    save(fig, "speakers.png")
    return made


def _data_files(manifest: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in manifest["shards"]:
        out.setdefault(e.get("split") or "train", []).append(e["path"])
    return {s: sorted(out[s]) for s in SPLITS if s in out} | {s: sorted(v) for s, v in out.items() if s not in SPLITS}


def _fields_section() -> str:
    from cinedub.schema import FIELDS

    lines = ["| column | type | unit | description |", "|---|---|---|---|"]
    for f in FIELDS:
        lines.append(f"| `{f.name}` | `{f.type}` | {f.unit} | {f.description.replace('|', '/')} |")
    return "\n".join(lines)


def _yaml_list(items: list[str], indent: int) -> str:
    pad = " " * indent
    return "\n".join(f"{pad}- {json.dumps(i)}" for i in items)


def render_card(stats: dict[str, Any], manifest: dict[str, Any], plots: list[str], license_id: str) -> str:
    """The ``README.md`` text (YAML front matter + sections)."""
    files = _data_files(manifest)
    langs = sorted(k for k in stats["hours_by"]["language"] if k != "none")
    cfg = "\n".join(f"  - split: {split}\n    path:\n{_yaml_list(paths, 6)}" for split, paths in files.items())
    front = f"""---
license: {license_id}
language:
{_yaml_list(langs, 0) if langs else "- multilingual"}
size_categories:
- {_size_category(stats["clips"])}
task_categories:
- text-to-speech
- automatic-speech-recognition
tags:
- dubbing
- audio-visual
- speaker-diarization
- active-speaker-detection
configs:
- config_name: default
  data_files:
{cfg}
---
"""
    by = stats["hours_by"]
    parts = [front, "# CineDub dataset\n",
             "Clips of speech cut from film and TV sources with their transcript, word times, speaker turns (ids stable "
             "per source), on-screen faces frame by frame, and provenance. Built by CineDub; load it with "
             "`datasets.load_dataset(\"<this folder>\")` (each clip once, in its split) or "
             "`cinedub.reader.ShardReader`.\n",
             f"Version {manifest.get('version', 0)} (schema {manifest.get('schema_version')}): "
             f"{stats['clips']} clips from {stats['sources']} sources, {stats['hours']:.3f} h of speech. "
             "The license above is set by whoever built the dataset (`shards.license`); check the sources' own terms.\n",
             "## Statistics\n"]
    for key in ("language", "scene_type", "split"):
        parts.append(f"| {key} | hours | clips |\n|---|---|---|\n" + "\n".join(
            f"| {k} | {v:.3f} | {stats['clips_by'][key][k]} |" for k, v in by[key].items()) + "\n")
    shares = (stats["on_screen_share"], stats["off_screen_share"], stats["unknown_screen_share"])
    if shares[0] is not None:
        parts.append(f"Speech on screen {shares[0]:.1%}, off screen {shares[1]:.1%}, unknown {shares[2]:.1%}. "
                     f"Speakers per clip: {stats['speakers_per_clip']}. Correction outcomes: "
                     f"{stats['correction_outcomes']}.\n")
    parts += [f"![{p}]({PLOTS}/{p})\n" for p in plots]
    parts.append("## Data fields\n\n" + _fields_section() + "\n")
    return "\n".join(parts)


def card_license(out_dir: str | Path) -> str | None:
    """The ``license`` of ``out_dir``'s current card (None without a card or that field)."""
    import yaml

    path = Path(out_dir) / CARD
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---", 2)[1]) or {}  # the front matter: a value may hold "---"
    except yaml.YAMLError:
        return None
    value = meta.get("license")
    return str(value) if value else None


def write_card(out_dir: str | Path, license_id: str | None = None) -> Path:
    """Regenerate ``stats.json``, the plots and ``README.md`` of ``out_dir`` from its newest version; returns the
    card's path. ``license_id`` None keeps the current card's license ("unknown" without one).

    Raises:
        FileNotFoundError: no manifest in ``out_dir``.
    """
    from cinedub.reader import ShardReader

    out = Path(out_dir)
    reader = ShardReader(out)
    names = set(reader.dataset().schema.names) if reader.files() else set()
    cols = [c for c in _LIGHT if c in names]
    rows = reader.table(columns=cols).to_pylist() if reader.files() else []
    corrections = (reader.table(columns=["correction"]).column("correction").to_pylist()
                   if "correction" in names and rows else [None] * len(rows))
    stats = dataset_stats(rows, corrections)
    license_id = license_id or card_license(out) or "unknown"
    write_json_atomic(out / STATS, stats)
    plots = _plots(stats, out / PLOTS)
    return write_text_atomic(out / CARD, render_card(stats, reader.manifest, plots, license_id))
