# bench/litellm_env.py: LiteLLM's proxy as an optional comparison target, in a virtualenv of its own.
#
# Rules: LiteLLM never enters our environment. `ensure()` builds (once) a virtualenv under the user's
# cache directory and pip-installs `litellm[proxy]` into it through pip, the ordinary client; later runs
# reuse it. The proxy runs with one uvicorn worker (LiteLLM's own launcher, its default loop), pointed at
# the same upstreams as every other target through its OpenAI-compatible provider, with a master key
# (LiteLLM refuses to start without one) and uvicorn's access log off, as it is for nginx and llm-edge.
# It binds port 0 and we read the port from uvicorn's "running on" line in its log.
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

from bench import servers
from sim import procs

_RUNNING = re.compile(r"Uvicorn running on https?://([0-9.]+):(\d+)")


class LiteLLMUnavailableError(RuntimeError):
    """LiteLLM could not be installed or started; the message says why."""


def cache_dir() -> Path:
    """Where the benchmark keeps what it downloads (`$XDG_CACHE_HOME/llm-edge-bench`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llm-edge-bench"


def venv_dir() -> Path:
    """The LiteLLM virtualenv."""
    return cache_dir() / "litellm-venv"


def ensure(venv: Path, log: Path, progress: object = print) -> Path:
    """The `litellm` executable in `venv`, installing it first if needed (minutes, once)."""
    exe = venv / "bin" / "litellm"
    marker = venv / ".installed"
    if exe.exists() and marker.exists():
        return exe
    say = progress if callable(progress) else print
    say(f"installing litellm[proxy] into {venv} (once; this takes a few minutes)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        steps = (
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "litellm[proxy]"],
        )
        for argv in steps:
            try:
                code = subprocess.run(argv, stdout=out, stderr=out, timeout=1800, check=False).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise LiteLLMUnavailableError(f"{argv[2]} failed: {exc}") from None
            if code != 0:
                tail = log.read_text("utf-8", "replace").strip().splitlines()[-5:]
                raise LiteLLMUnavailableError(f"`{' '.join(argv[-3:])}` exited with {code}: " + " | ".join(tail))
    if not exe.exists():
        raise LiteLLMUnavailableError(f"pip installed litellm but {exe} is missing")
    marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return exe


def version(venv: Path) -> str:
    """The installed LiteLLM version, or ""."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout.strip()


def config_yaml(static: tuple[str, int], sse: tuple[str, int], master_key: str) -> str:
    """LiteLLM's config: the same two models as llm-edge's, on the same upstreams (JSON is valid YAML)."""
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{servers.UPSTREAM_MODEL}",
                "api_base": f"http://{host}:{port}/v1",
                "api_key": "sk-bench-upstream-dummy",
            },
        }
        for name, (host, port) in (("bench", static), ("bench-stream", sse))
    ]
    doc = {
        "model_list": models,
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": master_key},
    }
    return json.dumps(doc, indent=2)


def _log_config() -> str:
    # uvicorn's own messages (we need "running on") at INFO; one access-log line per request, off.
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    doc = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }
    return json.dumps(doc)


def start(
    exe: Path, work: Path, static: tuple[str, int], sse: tuple[str, int], cpu: int | None, timeout: float = 120.0
) -> tuple[procs.Child, tuple[str, int], str]:
    """Start LiteLLM's proxy pinned to `cpu`; return the child, its address and the master key."""
    work.mkdir(parents=True, exist_ok=True)
    key = "sk-bench-" + secrets.token_hex(16)
    cfg = work / "litellm.yaml"
    cfg.write_text(config_yaml(static, sse, key))
    log_cfg = work / "uvicorn-log.json"
    log_cfg.write_text(_log_config())
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True")  # no fetch of the price list from the internet
    argv = servers.taskset(cpu, [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", "0",
                                 "--num_workers", "1", "--log_config", str(log_cfg)])  # fmt: skip
    log = work / "litellm.log"
    child = servers.LoggedChild("litellm", argv, log, env).start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            match = _RUNNING.search(log.read_text("utf-8", "replace")) if log.exists() else None
            if match:
                addr = (match.group(1), int(match.group(2)))
                break
            if not child.alive():
                raise LiteLLMUnavailableError(f"litellm exited before it was ready\n{child.log_tail()}")
            if time.monotonic() > deadline:
                raise LiteLLMUnavailableError(f"litellm did not start within {timeout:g}s\n{child.log_tail()}")
            time.sleep(0.1)  # polling its log: uvicorn announces the port nowhere else
        procs.wait_healthy(child, *addr, "/health/liveliness", timeout=30.0)
    except BaseException:
        child.stop()
        raise
    return child, addr, key
