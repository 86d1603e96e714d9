"""The web view in a real browser: Debian's chromium under Selenium (chromedriver from
chromium-driver; nothing is downloaded), against a real `graft serve` over the demo's registry.

One registry and one server for the module: `graft demo --quick`, then what the pages must
show beyond it: a grandchild under the feature-extraction student, an advisory on that student
(so its grandchild inherits it, with a path), a training curve, a base whose description is
HTML, and read tokens (one confined to some models).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import graft_process  # noqa: E402

GRAFT = os.environ.get("GRAFT_BINARY", str(ROOT / ".build" / "debug" / "graft"))
CHROMIUM = os.environ.get("GRAFT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GRAFT_CHROMEDRIVER", "/usr/bin/chromedriver")
XSS = '<script>window.__graftPwned = 1</script><img src="x" onerror="window.__graftPwned = 2">'


def graft(registry: str, *args: str) -> str:
    result = subprocess.run([GRAFT, *args, "--registry", registry], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"graft {' '.join(args)}: {result.stderr}"
    return result.stdout


def graft_json(registry: str, *args: str):
    return json.loads(graft(registry, *args, "--json"))


class Site:
    """The server, its registry and what the tests know about it."""

    def __init__(self, tmp: pathlib.Path):
        self.registry = str(tmp / "registry")
        graft(self.registry, "demo", "--quick")
        teacher = "fmnist-teacher"
        students = [node["name"] for node in graft_json(self.registry, "lineage", teacher)["descendants"] if node["depth"] == 1]
        self.teacher, self.students = teacher, sorted(students)
        self.fe = next(name for name in students if name.endswith("-fe"))
        # A grandchild: every tensor of its parent frozen, one checkpoint (its parent's file).
        self.grandchild = self.fe + "-child"
        graft(self.registry, "student", "create", self.grandchild, "--from", self.fe, "--freeze", "*",
              "--description", "a grandchild of the teacher")
        exported = str(tmp / "fe.safetensors")
        graft(self.registry, "export", self.fe, "--output", exported)
        graft(self.registry, "checkpoint", "add", self.grandchild, exported, "--metric", "val/accuracy=0.01")
        # An open advisory on the feature-extraction student: its grandchild inherits it.
        graft(self.registry, "advisory", "add", self.fe, "--id", "GRAFT-TEST-1", "--severity", "high",
              "--note", "trained on mislabelled data", "--url", "javascript:alert(1)")
        # A training curve on the full fine-tune student.
        self.full = next(name for name in students if name.endswith("-full"))
        for step, loss in [(10, 1.5), (20, 1.1), (30, 0.8), (40, 0.7)]:
            graft(self.registry, "metric", "log", self.full, f"train/smoothed_loss={loss}", "--step", str(step))
        # A base whose description is markup.
        self.xss = "markup-base"
        graft(self.registry, "base", "add", exported, "--name", self.xss, "--description", XSS)
        self.read_token = graft(self.registry, "token", "create", "viewer", "--scope", "read").strip().splitlines()[-1]
        self.confined_token = graft(self.registry, "token", "create", "team", "--scope", "read", "--models", self.fe + "*") \
            .strip().splitlines()[-1]
        self.server = graft_process.Server(GRAFT, self.registry, str(tmp / "serve.log"))
        self.url = self.server.url

    def best_under_teacher(self):
        return graft_json(self.registry, "best", "--metric", "val/accuracy", "--under", self.teacher)


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    running = Site(tmp_path_factory.mktemp("web"))
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"chromium and chromedriver are needed ({CHROMIUM}, {CHROMEDRIVER}): `make test` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000",
                     "--disable-extensions", "--no-first-run", "--disable-background-networking", "--disable-sync",
                     "--disable-component-update", "--disable-default-apps"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def fresh(browser, site):
    """The browser with no session: cookies cleared, console drained."""
    browser.get(site.url + "/login")
    browser.delete_all_cookies()
    browser.get_log("browser")
    return browser


def screenshot_dir() -> pathlib.Path | None:
    directory = os.environ.get("GRAFT_SCREENSHOTS")
    if not directory:
        return None
    path = pathlib.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


