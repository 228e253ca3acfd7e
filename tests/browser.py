"""A headless Chromium for the report tests: found on PATH, else installed from Debian's
packages when the tests run as root with apt (as on CI), else the tests skip saying why.

``load(page)`` opens a file the way a person would and returns what a test asserts on:
the DOM after the page's script ran, every console message, every request the page made
(Chromium's net log, filtered to requests whose top frame is the file), and a screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    """The browser's executable (installing Debian's ``chromium`` if need be), or skip."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "install", "-y", "-q", "chromium"],
                     ["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
            subprocess.run(step, env=env, capture_output=True, timeout=900, check=False)
            found = shutil.which("chromium")
            if found:
                return found
    pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium) "
                "for the browser tests of the report")


@dataclass
class Loaded:
    """What a page did in the browser."""

    dom: str
    console: list[str]
    requests: list[str]
    screenshot: Path


def _requests(net_log: Path, page: str) -> list[str]:
    text = net_log.read_text(encoding="utf-8", errors="replace").rstrip()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short when the browser exits
        log = json.loads(text.rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    out = []
    for event in log["events"]:
        params = event.get("params", {})
        if event.get("type") != start or "url" not in params:
            continue
        # the page's own requests have the file as their top frame; the browser's
        # background fetches (component updates and the like) do not
        if "file://" in str(params.get("network_isolation_key", "")) and \
                not params["url"].startswith(page.split("#")[0]):
            out.append(params["url"])
    return out


def load(page: Path, tmp: Path, *, fragment: str = "", width: int = 1300,
         height: int = 4000) -> Loaded:
    """Open ``page`` headless: its DOM after scripts, console, requests and a screenshot.

    Parameters
    ----------
    page : pathlib.Path
        An HTML file.
    tmp : pathlib.Path
        Where the net log and screenshot go.
    fragment : str
        URL fragment (``layer-3`` opens that layer's panel).
    width, height : int
        Window size of the screenshot (tall, so the page needs no scrolling).

    Returns
    -------
    Loaded
    """
    exe = chromium()
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    net = tmp / "net.json"
    shot = tmp / "page.png"
    dom = subprocess.run([exe, *FLAGS, f"--log-net-log={net}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=False)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    subprocess.run([exe, *FLAGS, f"--screenshot={shot}", f"--window-size={width},{height}",
                    url], capture_output=True, text=True, timeout=120, check=False)
    return Loaded(dom.stdout, console, _requests(net, page.resolve().as_uri()), shot)
