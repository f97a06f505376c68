"""Versioned prompt templates (``prompts/<task>/<version>/<language>.md``, see ``prompts/README.md``).

A template's identity, :attr:`PromptTemplate.prompt_id` (``correction/v1/en@1a2b3c4d``: task, version, language and
the first 8 hex digits of the file's SHA-256), is part of the per-clip cache key and of each row's provenance.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

import yaml

from cinedub.llm.schema import AGE_GROUPS, EMOTIONS, GENDERS, MAX_CLUE_CHARS, SCENE_TYPES, TIMBRES
from cinedub.text import base_language

FALLBACK_LANGUAGE = "en"
_SECTION = re.compile(r"^<!--\s*(system|user)\s*-->\s*$", re.M)


def default_prompts_dir() -> Path:
    """The repository's top-level ``prompts/`` folder."""
    return Path(__file__).resolve().parents[2] / "prompts"


@dataclass(frozen=True)
class PromptTemplate:
    """One template file.

    Attributes:
        task / version / language: from the path (and checked against the front matter).
        system / user: the two messages, with ``$placeholders`` unfilled.
        sha256: SHA-256 of the file's bytes.
        path: where it was read from.
    """

    task: str
    version: str
    language: str
    system: str
    user: str
    sha256: str
    path: Path

    @property
    def prompt_id(self) -> str:
        """``<task>/<version>/<language>@<sha8>``: recorded in provenance and hashed into the cache key."""
        return f"{self.task}/{self.version}/{self.language}@{self.sha256[:8]}"

    def render(self, clip_data: dict[str, Any], language: str) -> list[dict[str, str]]:
        """Chat messages ``[system, user]`` for one clip.

        ``clip_data`` is serialised with :func:`data_block_json`, so transcript text appears only inside the
        ``<clip_data>`` block and cannot close it.

        Raises:
            KeyError: the template uses a placeholder this code does not fill.
        """
        labels = {
            "emotions": ", ".join(EMOTIONS),
            "genders": ", ".join(GENDERS),
            "age_groups": ", ".join(AGE_GROUPS),
            "scene_types": ", ".join(SCENE_TYPES),
            "timbres": ", ".join(TIMBRES),
            "max_clue_chars": str(MAX_CLUE_CHARS),
            "language": language,
        }
        system = Template(self.system).substitute(labels)
        user = Template(self.user).substitute(labels, clip_json=data_block_json(clip_data))
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def data_block_json(data: dict[str, Any]) -> str:
    """Compact JSON with ``<``, ``>`` and ``&`` escaped (``\\u003c``...), as HTML-safe JSON encoders do.

    Still valid JSON for the model, but a transcript containing ``</clip_data>`` cannot end the data block.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def load_prompt(language: str | None, version: str = "v1", task: str = "correction", root: Path | None = None) -> PromptTemplate:
    """The template for ``language`` (region suffixes ignored; falls back to ``en``).

    Raises:
        FileNotFoundError: neither the language's file nor the fallback exists for that task and version.
        ValueError: the file lacks the ``<!-- system -->`` / ``<!-- user -->`` sections or its front matter
            disagrees with its path.
    """
    folder = Path(root or default_prompts_dir()) / task / version
    lang = base_language(language) or FALLBACK_LANGUAGE
    path = folder / f"{lang}.md"
    if not path.is_file():
        path = folder / f"{FALLBACK_LANGUAGE}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {folder}/{lang}.md nor {FALLBACK_LANGUAGE}.md (see prompts/README.md)")
    return _load(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load(path_str: str, _mtime_ns: int) -> PromptTemplate:
    path = Path(path_str)
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    meta: dict[str, Any] = {}
    if text.startswith("---"):
        _, front, text = text.split("---", 2)
        meta = yaml.safe_load(front) or {}
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if set(sections) != {"system", "user"}:
        raise ValueError(f"{path}: needs a '<!-- system -->' and a '<!-- user -->' section")
    task, version, language = path.parts[-3], path.parts[-2], path.stem
    for key, value in (("task", task), ("version", version), ("language", language)):
        if key in meta and str(meta[key]) != value:
            raise ValueError(f"{path}: front matter says {key}={meta[key]!r} but the path says {value!r}")
    return PromptTemplate(
        task=task,
        version=version,
        language=language,
        system=sections["system"],
        user=sections["user"],
        sha256=hashlib.sha256(raw).hexdigest(),
        path=path,
    )
