"""A throwaway JupyterLab server for the browser test: on 127.0.0.1 with a token, its
config, data, runtime, settings and workspaces in a temporary folder so a developer's
own Lab setup never leaks in, and stopped with its kernels."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TOKEN = "tokmagic-browser-test"

#: User settings for the isolated server: no news toast over the page (only this
#: setting stops it), and every cell kept in the DOM even when scrolled away.
SETTINGS = {
    ("@jupyterlab", "apputils-extension", "notification.jupyterlab-settings"):
        {"fetchNews": "false", "checkForUpdates": False},
    ("@jupyterlab", "notebook-extension", "tracker.jupyterlab-settings"): {"windowingMode": "none"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group: the server then shuts its kernels down
    (they run in sessions of their own, so a SIGKILL would leave them behind)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextmanager
def running(work: Path, root: Path, env: dict[str, str], log: Path) -> Iterator[str]:
    """Start JupyterLab serving ``root``; yields its base URL (no token in it)."""
    for parts, data in SETTINGS.items():
        path = work.joinpath("settings", *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    env = {**env, "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTER_DATA_DIR": str(work / "data"),
           "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "IPYTHONDIR": str(work / "ipython")}
    env.pop("JUPYTER_TOKEN", None)
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={root}", "--expose-app-in-browser", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'workspaces'}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{base}/api/status?token={TOKEN}", proc, timeout=60)
        yield base
    finally:
        _stop(proc)
