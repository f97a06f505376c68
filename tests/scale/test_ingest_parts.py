"""The ingest flow's parts without a server: discovery (folder glob, fsspec prefix, list), keys, parameter
validation, the transient-error rule of retries, and the containers' files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import fsspec
import httpx
import pytest
import yaml
from pydantic import ValidationError

from cinedub.errors import MediaError, ModelNotFoundError
from cinedub.ledger import Ledger
from cinedub.hashing import sha256_file
from flows.discover import discover, fetch
from flows.ingest import IngestSpec, idempotency_key, source_key
from flows.resources import exception_is_transient, gpu_limit_name, is_transient, retry_options

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def landing(tmp_path: Path, media_dir: Path) -> Path:
    """A landing folder of real files (symlinks to ../shared/media), one nested, one hidden, one not media."""
    d = tmp_path / "landing"
    (d / "ep2").mkdir(parents=True)
    os.symlink(media_dir / "en_monologue/englishvideo.mp4", d / "a.mp4")
    os.symlink(media_dir / "zh_narration/10.mp4", d / "ep2/b.MP4")
    os.symlink(media_dir / "en_film_titanic/test1.mp4", d / ".uploading.mp4")
    os.symlink(media_dir / "asr/jfk.flac", d / "c.flac")
    return d


def test_discover_glob_prefix_and_list(landing: Path, media_dir: Path):
    names = lambda cs: [c.name for c in cs]  # noqa: E731
    assert names(discover(glob=str(landing / "*.mp4"))) == ["a.mp4"]
    assert names(discover(glob=str(landing / "**/*.[mM][pP]4"))) == ["a.mp4", "b.MP4"]
    assert names(discover(prefix=str(landing))) == ["a.mp4", "b.MP4"], "hidden and non-media files are skipped"
    assert names(discover(prefix=f"file://{landing}")) == ["a.mp4", "b.MP4"]
    listed = discover(sources=[str(landing / "c.flac"), str(landing)], glob=str(landing / "a.mp4"))
    assert names(listed) == ["a.mp4", "c.flac", "b.MP4"], "an explicit file is taken whatever its suffix; no dups"
    a = listed[0]
    assert a.local and a.size == (media_dir / "en_monologue/englishvideo.mp4").stat().st_size
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        discover(sources=[str(landing / "nope.mp4")])


def test_local_keys_are_content_hashes_and_cached(landing: Path, tmp_path: Path):
    led = Ledger(tmp_path / "out")
    c = discover(sources=[str(landing / "a.mp4")])[0]
    key = source_key(led, c)
    assert key == sha256_file(landing / "a.mp4")
    led.add(key, c.uri, c.name, c.size, c.mtime_ns)
    assert led.known_key(c.uri, c.size, c.mtime_ns) == key


def test_object_store_prefix_keys_and_fetch(media_dir: Path, tmp_path: Path):
    fs = fsspec.filesystem("memory")
    data = (media_dir / "zh_narration/10.mp4").read_bytes()
    fs.pipe("/bucket/landing/ep1/10.mp4", data)
    fs.pipe("/bucket/landing/readme.txt", b"not media")
    found = discover(prefix="memory://bucket/landing/")
    assert [c.uri for c in found] == ["memory:///bucket/landing/ep1/10.mp4"]  # fsspec's spelling of memory URLs
    c = found[0]
    assert not c.local and c.size == len(data)
    key = source_key(Ledger(tmp_path / "out"), c)
    assert key == c.identity_key() and len(key) == 64
    fs.pipe("/bucket/landing/ep1/10.mp4", data + b"\0")  # a new version of the object: a new key
    assert discover(prefix="memory://bucket/landing/")[0].identity_key() != key
    local = fetch(c.uri, tmp_path / "dl")
    assert local.read_bytes() == data + b"\0" and not list((tmp_path / "dl").glob(".*"))
    assert fetch(str(media_dir / "zh_narration/10.mp4"), tmp_path / "dl2") == media_dir / "zh_narration/10.mp4"


def test_ingest_spec_validation(tmp_path: Path, models_dir: Path):
    ok = IngestSpec(out_dir=str(tmp_path), glob="/x/*.mp4", config={"separation": {"method": "none"}})
    assert ok.max_attempts == 3 and ".mkv" in ok.suffixes
    with pytest.raises(ValidationError, match="at least one of glob, prefix or sources"):
        IngestSpec(out_dir=str(tmp_path))
    with pytest.raises(ValidationError, match="method"):
        IngestSpec(out_dir=str(tmp_path), sources=["a.mp4"], config={"separation": {"method": "magic"}})
    with pytest.raises(ValidationError, match="deployment"):
        IngestSpec(out_dir=str(tmp_path), sources=["a.mp4"], deployment="no-slash")
    with pytest.raises(ValidationError, match="extra"):
        IngestSpec(out_dir=str(tmp_path), sources=["a.mp4"], sourcs=["typo"])
    # the deployment's parameter schema (what the server enforces: 409 on a bad run request) comes from the model
    schema = IngestSpec.model_json_schema()
    assert schema["required"] == ["out_dir"] and schema["additionalProperties"] is False


def test_idempotency_key_moves_only_with_attempts(tmp_path: Path):
    led = Ledger(tmp_path / "out")
    e = led.add("f" * 64, "/in/x.mp4")
    k0 = idempotency_key(tmp_path / "out", e)
    assert k0 == idempotency_key(tmp_path / "out", led.get(e.key)), "same while the run exists"
    assert k0 != idempotency_key(tmp_path / "other", e), "another dataset is another run"
    led.mark_submitted(e.key, "r1")
    led.mark_failed(e.key, "crashed: x", "r1")
    assert idempotency_key(tmp_path / "out", led.get(e.key)) == k0[:-1] + "1"


class _State:
    def __init__(self, exc=None, message=""):
        self.data, self.message = exc, message

    def result(self, raise_on_failure=False):
        return self.data


def test_only_transient_errors_are_retried():
    req = httpx.Request("POST", "http://llm/v1/chat/completions")
    transient = [
        httpx.ConnectError("refused", request=req),
        httpx.HTTPStatusError("429", request=req, response=httpx.Response(429, request=req)),
        httpx.HTTPStatusError("503", request=req, response=httpx.Response(503, request=req)),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("read timed out"),
        OSError(116, "Stale file handle"),
        RuntimeError("CUDA error: out of memory"),
    ]
    permanent = [
        MediaError("/in/x.mp4", "no audio stream"),
        ModelNotFoundError("whisper-base-ct2 not in /models"),
        httpx.HTTPStatusError("400", request=req, response=httpx.Response(400, request=req)),
        ValueError("bad value"),
        KeyError("x"),
        FileNotFoundError(2, "No such file"),
    ]
    for exc in transient:
        assert is_transient(None, None, _State(exc)), exc
    for exc in permanent:
        assert not is_transient(None, None, _State(exc)), exc
    try:  # a MediaError raised while handling a connection error is still the input's fault
        try:
            raise ConnectionError("x")
        except ConnectionError as inner:
            raise MediaError("/in/y.mp4", "truncated") from inner
    except MediaError as e:
        assert not exception_is_transient(e)
    opts = retry_options(retries=3, backoff_s=10)
    assert opts["retry_delay_seconds"] == [10, 20, 40] and opts["retry_condition_fn"] is is_transient


def test_gpu_limit_names(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_limit_name("node7") == "gpu:node7:3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_limit_name("node7") == "gpu:node7:0" and gpu_limit_name("n", 1) == "gpu:n:1"


def test_compose_file_describes_the_cluster(monkeypatch):
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    svc = compose["services"]
    assert "postgresql+asyncpg://" in svc["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert svc["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    gpu_workers = {k: v for k, v in svc.items() if k.startswith("worker-gpu")}
    assert len(gpu_workers) >= 2
    devices = []
    for name, w in gpu_workers.items():
        (dev,) = w["deploy"]["resources"]["reservations"]["devices"]
        devices += dev["device_ids"]
        assert w["command"][w["command"].index("--limit") + 1] == "1", f"{name}: one run per GPU"
        assert w["environment"]["CINEDUB_GPU_SLOT"].endswith(":" + dev["device_ids"][0])
        assert "models:/models:ro" in w["volumes"]
    assert len(devices) == len(set(devices)), "each worker pinned to its own GPU"
    assert svc["llm"]["profiles"] == ["llm"]
    # the LLM settings are variables CineDub reads: loaded with the compose defaults, they reach Config.llm
    from cinedub.config import Config
    from cinedub.llm.config import LlmConfig

    env = svc["worker-cpu"]["environment"]
    assert not [k for k in env if k.startswith("OPENAI_")]
    default = lambda v: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))  # noqa: E731 - ${VAR:-x} -> x
    for k, v in env.items():
        if k.startswith("CINEDUB_LLM"):
            monkeypatch.setenv(k, default(v))
    llm = Config.load().llm
    served = svc["llm"]["command"][svc["llm"]["command"].index("--served-model-name") + 1]
    assert llm.base_url == "http://llm:8000/v1" and llm.model == default(served) == "cinedub-llm"
    assert LlmConfig().api_key_env in env
    assert "models" in compose["volumes"]
    tool = (["docker", "compose"] if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode
            == 0 else ["docker-compose"] if shutil.which("docker-compose") else None)
    if tool:  # the real validator, where installed (no engine needed)
        proc = subprocess.run([*tool, "-f", str(REPO / "docker/compose.yaml"), "--profile", "llm", "config", "-q"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_images_install_exactly_like_the_readme():
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/setup.sh" in readme
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (REPO / "docker" / name).read_text()
        runs = [line for line in text.splitlines() if line.startswith("RUN ")]
        assert any("bash scripts/setup.sh" in r for r in runs), name
        assert not any("pip install" in r for r in runs), f"{name} must not install packages on its own"


def test_cli_commands_show_the_ledger(tmp_path: Path):
    import typer
    from typer.testing import CliRunner

    from cinedub_cli.local import register

    app = typer.Typer()
    app.command()(lambda: None)
    register(app)
    led = Ledger(tmp_path)
    led.add(KEY := "c" * 64, "/in/bad.mp4", "bad.mp4")
    led.mark_failed(KEY, "failed: /in/bad.mp4: no audio stream")
    led.add("d" * 64, "/in/good.mp4", "good.mp4")
    runner = CliRunner()
    r = runner.invoke(app, ["ledger", str(tmp_path), "--status", "failed"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "bad.mp4" in r.output and "no audio stream" in r.output and "good.mp4" not in r.output
    assert {"serve", "submit", "ledger", "retry"} <= {c.name for c in typer.main.get_command(app).commands.values()}
