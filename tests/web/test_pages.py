"""Each page of the web view, driven in headless chromium against a real `graft serve`."""

from __future__ import annotations

import hashlib
import urllib.parse
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from conftest import XSS, graft, graft_json, screenshot_dir


def login(driver, site, token, next_path="/"):
    driver.get(site.url + "/login?next=" + urllib.parse.quote(next_path, safe=""))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    WebDriverWait(driver, 10).until(lambda d: "/login" not in d.current_url or d.find_elements(By.CSS_SELECTOR, ".error"))


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def path_of(driver):
    parts = urllib.parse.urlsplit(driver.current_url)
    return parts.path + ("?" + parts.query if parts.query else "")


def test_an_anonymous_visit_is_sent_to_login_and_back(fresh, site):
    fresh.get(site.url + f"/models/{site.fe}")
    assert path_of(fresh) == "/login?next=" + urllib.parse.quote(f"/models/{site.fe}", safe="")
    assert fresh.find_element(By.ID, "token").get_attribute("type") == "password"
    login(fresh, site, site.read_token, next_path=f"/models/{site.fe}")
    assert path_of(fresh) == f"/models/{site.fe}"
    assert fresh.find_element(By.TAG_NAME, "h1").text.startswith(site.fe)


def test_login_sets_a_strict_http_only_cookie_and_logout_clears_it(fresh, site):
    login(fresh, site, "graft_not-a-real-token")
    assert "/login" in fresh.current_url
    assert "unknown or revoked" in fresh.find_element(By.CSS_SELECTOR, ".error").text
    assert fresh.get_cookie("graft_session") is None

    login(fresh, site, site.read_token)
    assert path_of(fresh) == "/"
    cookie = fresh.get_cookie("graft_session")
    assert cookie is not None and cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    # A fresh session id, never the token itself; plain HTTP here (Secure under TLS).
    assert cookie["value"].startswith("graftsession_") and site.read_token not in cookie["value"]
    assert cookie["secure"] is False
    session = cookie["value"]
    # Scripts cannot read it.
    assert "graft_session" not in fresh.execute_script("return document.cookie")
    assert "viewer" in fresh.find_element(By.CSS_SELECTOR, ".account").text

    fresh.find_element(By.CSS_SELECTOR, "form.logout button").click()
    WebDriverWait(fresh, 10).until(lambda d: "/login" in d.current_url)
    assert fresh.get_cookie("graft_session") is None
    fresh.get(site.url + "/advisories")
    assert path_of(fresh).startswith("/login?next=")
    # Logout ended the session on the server: a copy of the cookie opens nothing.
    replay = urllib.request.Request(site.url + "/advisories", headers={"Cookie": "graft_session=" + session})
    with urllib.request.urlopen(replay, timeout=30) as response:
        assert urllib.parse.urlparse(response.url).path == "/login"


def test_a_revoked_token_ends_the_session(fresh, site):
    secret = graft(site.registry, "token", "create", "short-lived", "--scope", "read").strip().splitlines()[-1]
    login(fresh, site, secret)
    assert path_of(fresh) == "/"
    graft(site.registry, "token", "revoke", "short-lived")
    fresh.get(site.url + "/")
    assert path_of(fresh) == "/login?next=%2F"


PAGES = {
    "models": "/",
    "model": "/models/{full}",
    "model-overlay": "/models/{full}?overlay=1",
    "lineage": "/models/{fe}/lineage",
    "checkpoint": "/checkpoints/{fe}@2",
    "advisories": "/advisories",
}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_each_page_loads_without_a_console_error(fresh, site, page):
    login(fresh, site, site.read_token)
    fresh.get_log("browser")
    fresh.get(site.url + PAGES[page].format(full=site.full, fe=site.fe))
    WebDriverWait(fresh, 10).until(ready.presence_of_element_located((By.TAG_NAME, "h1")))
    assert fresh.title.endswith("· Graft")
    assert console_errors(fresh) == []
    # The stylesheet applied (it comes from the binary, not from a CDN).
    header = fresh.find_element(By.CSS_SELECTOR, "header.top")
    assert header.value_of_css_property("background-color") == "rgba(24, 32, 42, 1)"
    directory = screenshot_dir()
    if directory:
        fresh.set_window_size(1280, min(2400, max(900, fresh.execute_script("return document.body.scrollHeight"))))
        fresh.save_screenshot(str(directory / f"{page}.png"))
        fresh.set_window_size(1280, 1000)


def test_links_navigate_from_the_index_to_a_checkpoint(fresh, site):
    login(fresh, site, site.read_token)
    fresh.find_element(By.LINK_TEXT, site.fe).click()
    assert path_of(fresh) == f"/models/{site.fe}"
    fresh.find_element(By.LINK_TEXT, "Lineage").click()
    assert path_of(fresh) == f"/models/{site.fe}/lineage"
    # The edge into the student names its exact parent checkpoint; it links there.
    node = fresh.find_element(By.CSS_SELECTOR, f"li.node[data-name='{site.fe}']")
    edge = node.find_element(By.CSS_SELECTOR, ":scope > .box .edge a")
    parent = graft_json(site.registry, "lineage", site.fe)["model"]["parent"]
    assert edge.text == parent
    edge.click()
    assert path_of(fresh) == f"/checkpoints/{parent}"
    assert fresh.find_element(By.TAG_NAME, "h1").text == parent
    assert console_errors(fresh) == []


def test_index_filters_by_kind_mode_flag_and_text(fresh, site):
    login(fresh, site, site.read_token)
    index = graft_json(site.registry, "list")
    fresh.get(site.url + "/?kind=base")
    names = {row.get_attribute("data-model") for row in fresh.find_elements(By.CSS_SELECTOR, "table.models tbody tr")}
    assert names == {model["name"] for model in index if model["kind"] == "base"}
    fresh.get(site.url + "/?mode=feature-extraction")
    names = {row.get_attribute("data-model") for row in fresh.find_elements(By.CSS_SELECTOR, "table.models tbody tr")}
    assert names == {site.fe, site.grandchild}
    fresh.get(site.url + "/?flagged=1")
    names = {row.get_attribute("data-model") for row in fresh.find_elements(By.CSS_SELECTOR, "table.models tbody tr")}
    assert names == {site.fe, site.grandchild}
    fresh.get(site.url + "/?q=GRANDCHILD")  # searches descriptions too, case-insensitively
    names = {row.get_attribute("data-model") for row in fresh.find_elements(By.CSS_SELECTOR, "table.models tbody tr")}
    assert names == {site.grandchild}
    # Totals are the registry's.
    fresh.get(site.url + "/")
    stats = graft_json(site.registry, "stats")
    assert fresh.find_element(By.ID, "count-models").text == str(stats["models"])
    assert fresh.find_element(By.ID, "dedup-ratio").text == f"{stats['dedup_ratio']:.2f}×"
    # A bad filter is a clear error page, not a crash.
    fresh.get(site.url + "/?mode=sideways")
    assert "400" in fresh.find_element(By.TAG_NAME, "h1").text
    assert "feature-extraction" in fresh.find_element(By.CSS_SELECTOR, ".error").text


def test_a_flagged_model_shows_its_mark_and_the_path_of_inheritance(fresh, site):
    login(fresh, site, site.read_token)
    fresh.get(site.url + f"/models/{site.teacher}/lineage")
    child = fresh.find_element(By.CSS_SELECTOR, f"li.node[data-name='{site.grandchild}']")
    assert "flagged" in child.get_attribute("class").split()
    inheritance = child.find_element(By.CSS_SELECTOR, "ul.inheritance").text
    # With how much of the flagged checkpoint it holds: all of it, frozen whole, unmoved.
    reached = {e["model"]: e for e in graft_json(site.registry, "affected", site.fe, "--exposure", "digests")}
    layers = len(reached[site.grandchild]["layers"])
    assert inheritance == (f"GRAFT-TEST-1 via {site.fe} → {site.grandchild} · exposure 100.0%, frozen depth {layers} of {layers},"
                           " drift 0.000")
    assert "flagged" in fresh.find_element(By.CSS_SELECTOR, f"li.node[data-name='{site.fe}']").get_attribute("class").split()
    teacher = fresh.find_element(By.CSS_SELECTOR, f"li.node[data-name='{site.teacher}']")
    assert "flagged" not in teacher.get_attribute("class").split()
    # The advisories page: what it reaches, with the path; a non-web URL stays text.
    fresh.get(site.url + "/advisories")
    section = fresh.find_element(By.ID, "GRAFT-TEST-1")
    affected = graft_json(site.registry, "affected", site.fe)
    assert section.find_element(By.CSS_SELECTOR, ".reach-count").text == str(len(affected))
    rows = {row.get_attribute("data-model"): row.find_element(By.CSS_SELECTOR, "td.path").text
            for row in section.find_elements(By.CSS_SELECTOR, "table.reach tbody tr")}
    assert rows == {entry["model"]: " → ".join(entry["path"]) for entry in affected}
    exposures = {row.get_attribute("data-model"): row.find_element(By.CSS_SELECTOR, "td.exposure").text
                 for row in section.find_elements(By.CSS_SELECTOR, "table.reach tbody tr")}
    assert exposures == {entry["model"]: f"{entry['exposure'] * 100:.1f}%" for entry in affected}
    assert "0% is not safe" in section.text
    assert section.find_elements(By.CSS_SELECTOR, "a[href^='javascript']") == []
    assert "javascript:alert(1)" in section.text


def test_the_best_checkpoint_is_highlighted(fresh, site):
    login(fresh, site, site.read_token)
    fresh.get(site.url + f"/models/{site.teacher}/lineage")
    best = site.best_under_teacher()
    highlighted = fresh.find_elements(By.CSS_SELECTOR, "li.node.best")
    assert [node.get_attribute("data-name") for node in highlighted] == [best["checkpoint"]["model"]]
    summary = fresh.find_element(By.ID, "best").text
    assert best["checkpoint"]["ref"] in summary and "val/accuracy" in summary
    # Flagged models are left out of best, as in the CLI.
    assert best["checkpoint"]["model"] not in (site.fe, site.grandchild)
    # Another metric: the highlight follows the CLI's answer for it.
    fresh.get(site.url + f"/models/{site.teacher}/lineage?m=val/loss,")
    loss = graft_json(site.registry, "best", "--metric", "val/loss", "--under", site.teacher)
    assert [node.get_attribute("data-name") for node in fresh.find_elements(By.CSS_SELECTOR, "li.node.best")] == [loss["checkpoint"]["model"]]


def test_curve_charts_have_one_series_per_model_and_overlay_the_students(fresh, site):
    login(fresh, site, site.read_token)
    fresh.get(site.url + f"/models/{site.full}")

    def series(caption):
        for figure in fresh.find_elements(By.CSS_SELECTOR, "figure.chart"):
            if figure.find_element(By.TAG_NAME, "figcaption").text == caption:
                return [group.get_attribute("data-series") for group in figure.find_elements(By.CSS_SELECTOR, "g.series")]
        raise AssertionError(f"no chart {caption!r}")

    assert series("val/accuracy (checkpoints)") == [site.full]
    assert series("train/smoothed_loss (curve)") == [site.full]
    points = fresh.find_elements(By.CSS_SELECTOR, "figure.chart g.series circle")
    assert len(points) > 0
    fresh.find_element(By.ID, "overlay").click()
    assert path_of(fresh) == f"/models/{site.full}?overlay=1"
    # Every student of the teacher (the grandchild is not one), the model itself first.
    overlaid = series("val/accuracy (checkpoints)")
    assert overlaid[0] == site.full and sorted(overlaid) == site.students
    assert series("train/smoothed_loss (curve)") == [site.full]
    assert console_errors(fresh) == []


def test_the_checkpoint_page_shows_manifest_states_and_the_diff_per_layer(fresh, site, tmp_path):
    login(fresh, site, site.read_token)
    fresh.get(site.url + f"/checkpoints/{site.fe}@2")
    manifest = graft_json(site.registry, "show", site.fe)["manifest"]["entries"]
    states = {entry["name"]: entry["state"] for entry in manifest}
    shown = {}
    for row in fresh.find_elements(By.CSS_SELECTOR, "table.tensors tr.tensor"):
        cells = row.find_elements(By.TAG_NAME, "td")
        shown[cells[0].text] = (cells[3].text, cells[6].text)
    assert {name: state for name, (state, _) in shown.items()} == {n: s for n, s in states.items() if s != "dropped"}
    # Against the teacher's checkpoint: frozen tensors are the same, trained ones changed.
    assert all(change == "same" for name, (state, change) in shown.items() if state == "frozen")
    assert any(change == "changed" for state, change in shown.values())
    parent = graft_json(site.registry, "lineage", site.fe)["model"]["parent"]
    assert fresh.find_element(By.ID, "diff-against").text.startswith(f"Compared with {parent}")
    detail = graft_json(site.registry, "show", f"{site.fe}@2")
    assert fresh.find_element(By.ID, "logical-bytes").text == f"{detail['checkpoint']['file_bytes']:,}"
    # The download link serves the checkpoint's exact bytes (the session cookie is the credential).
    href = fresh.find_element(By.CSS_SELECTOR, "a.download").get_attribute("href")
    session = fresh.get_cookie("graft_session")["value"]
    request = urllib.request.Request(href, headers={"Cookie": "graft_session=" + session})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    exported = tmp_path / "exported.safetensors"
    graft(site.registry, "export", f"{site.fe}@2", "--output", str(exported))
    assert hashlib.sha256(body).digest() == hashlib.sha256(exported.read_bytes()).digest()
    assert response.headers["ETag"] == f'"{detail["checkpoint"]["digest"]}"'


def test_text_a_user_typed_shows_as_text(fresh, site):
    login(fresh, site, site.read_token)
    fresh.get(site.url + f"/models/{site.xss}")
    assert XSS in fresh.find_element(By.CSS_SELECTOR, "dl.facts").text
    fresh.get(site.url + "/?q=markup")
    assert XSS in fresh.find_element(By.CSS_SELECTOR, "table.models").text
    assert fresh.execute_script("return window.__graftPwned === undefined") is True
    assert console_errors(fresh) == []


def test_a_confined_token_sees_only_its_models(fresh, site):
    login(fresh, site, site.confined_token)
    names = {row.get_attribute("data-model") for row in fresh.find_elements(By.CSS_SELECTOR, "table.models tbody tr")}
    assert names == {site.fe, site.grandchild}
    fresh.get(site.url + f"/models/{site.teacher}")
    assert fresh.find_element(By.TAG_NAME, "h1").text.startswith("404")
    # Its lineage starts at the first model it sees; nothing above is named.
    fresh.get(site.url + f"/models/{site.grandchild}/lineage")
    assert {node.get_attribute("data-name") for node in fresh.find_elements(By.CSS_SELECTOR, "li.node")} == {site.fe, site.grandchild}
    assert site.teacher not in fresh.find_element(By.TAG_NAME, "main").text
    fresh.get(site.url + "/advisories")
    assert fresh.find_element(By.ID, "GRAFT-TEST-1")


def test_lineage_expands_in_place_and_searches(fresh, site):
    login(fresh, site, site.read_token)
    fresh.get(site.url + f"/models/{site.teacher}/lineage?depth=1")
    node = fresh.find_element(By.CSS_SELECTOR, f"li.node[data-name='{site.fe}']")
    assert fresh.find_elements(By.CSS_SELECTOR, f"li.node[data-name='{site.grandchild}']") == []
    node.find_element(By.CSS_SELECTOR, "a.expand").click()
    WebDriverWait(fresh, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"li.node[data-name='{site.grandchild}']"))
    assert path_of(fresh) == f"/models/{site.teacher}/lineage?depth=1"  # in place, no navigation
    assert console_errors(fresh) == []
    fresh.get(site.url + f"/models/{site.teacher}/lineage?q=child")
    results = fresh.find_element(By.ID, "search-results")
    assert results.find_element(By.TAG_NAME, "h2").text == "Models matching “child”: 1"
    results.find_element(By.LINK_TEXT, "show in the tree").click()
    assert fresh.find_element(By.CSS_SELECTOR, "nav.crumbs").text == f"{site.teacher} › {site.fe} › {site.grandchild}"
