"""The SRE console: its page shell, and an SRE driving it in headless Chromium.

The browser test runs a real gateway process in front of the session's vLLM
server and Debian's Chromium (through Playwright, never a downloaded browser).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect, sync_playwright

from gateway.console import STATIC
from serving.corpus import BRAND_VOICE
from tests.gateway.conftest import Stack
from tests.processes import GatewayProcess, metric_sum

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags the closed network refuses Chromium's own calls.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ROUTE = "support-console"
UI_TIMEOUT_MS = 20_000  # the page refreshes every 2 s; the host is shared with vLLM
PAIRS_TIMEOUT_S = 180.0
SRE = "sre-console"  # the operator token the SRE signs the console in with


def test_the_page_shell_allows_only_its_own_origin(make_stack) -> None:
    stack: Stack = make_stack()
    page = stack.http.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = stack.http.get("/console/console.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["content-security-policy"] == page.headers["content-security-policy"]
    missing = stack.http.get("/console/nothing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


def test_the_shell_carries_no_data_and_loads_nothing_from_elsewhere(make_stack) -> None:
    stack: Stack = make_stack()
    page = stack.http.get("/console").text
    assert "support" not in page  # no route, rollout or token in the shell
    for path in STATIC.iterdir():
        text = path.read_text()
        # The SVG namespace names a vocabulary; the browser fetches nothing from it.
        outside = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text)) - {
            "http://www.w3.org",
            "//www.w3.org",
        }
        assert not outside, (path.name, outside)


def test_the_script_inserts_text_never_html() -> None:
    script = (STATIC / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


# --- In a browser, against real vLLM ---------------------------------------------------------


@pytest.fixture
def gateway(vllm_server, tmp_path: Path) -> Iterator[GatewayProcess]:
    routes = {
        "backends": {"vllm": {"url": vllm_server.config.base_url}},
        "routes": [{"name": ROUTE, "stable": {"backend": "vllm", "model": "tiny-llama",
                                              "name": "base"}}],
    }  # fmt: skip
    settings = {"ROLLGATE_STATE": str(tmp_path / "state.db"), "ROLLGATE_CONTROLLER_TICK_S": "0.5"}
    with GatewayProcess(routes, tmp_path, settings) as gateway:
        yield gateway


def shadow_pairs(admin: httpx.Client, count: int) -> list[dict]:
    """Wait for `count` shadow pairs: the candidate answers its copies after stable."""
    deadline = time.monotonic() + PAIRS_TIMEOUT_S
    while len(pairs := admin.get("/admin/shadow-pairs").json()["pairs"]) < count:
        assert time.monotonic() < deadline, f"only {len(pairs)} shadow pairs"
        time.sleep(0.5)
    return pairs


def reviews(gateway: GatewayProcess) -> tuple[float, float]:
    """Blind-review scores recorded (count, sum) over both variants, from /metrics."""
    text = httpx.get(f"{gateway.url}/metrics").text
    labels = {"route": ROUTE, "role": "review"}
    return (
        metric_sum(text, "rollgate_feedback_score_count", **labels),
        metric_sum(text, "rollgate_feedback_score_sum", **labels),
    )


def start_a_rollout_with_shadow_pairs(gateway: GatewayProcess, admin: httpx.Client) -> None:
    """The rollout, and a client of the route (a key of its own) whose answers are shadowed."""
    plan = {
        "route": ROUTE,
        "candidate": {"name": BRAND_VOICE.name, "backend": "vllm", "model": BRAND_VOICE.name},
        # Long steps: only the SRE moves this rollout.
        "steps": [
            {"kind": "shadow", "sample": 1.0, "min_duration_s": 3600},
            {"kind": "weight", "percent": 50, "min_duration_s": 3600},
        ],
        "evaluation_interval_s": 2,
    }
    assert admin.post("/admin/rollouts", json=plan).status_code == 201
    auth = {"authorization": f"Bearer {gateway.create_key('acme', debug=False)}"}
    with httpx.Client(base_url=gateway.url, timeout=120, headers=auth) as client:
        for question in ("How do I reset my password?", "Where is my invoice?", "Hi!"):
            chat = {"model": ROUTE, "messages": [{"role": "user", "content": question}],
                    "max_tokens": 24, "temperature": 0}  # fmt: skip
            assert client.post("/v1/chat/completions", json=chat).status_code == 200
    shadow_pairs(admin, 2)


def operator_token(admin: httpx.Client, name: str) -> str:
    """A new operator token called `name`, as `rollgate tokens create` makes one."""
    created = admin.post("/admin/tokens", json={"name": name, "role": "operator"})
    assert created.status_code == 201, created.text
    return created.json()["token"]


def sign_in(page: Page, token: str) -> None:
    """A wrong token first: the console says it was refused (401) and asks again."""
    page.fill("#token", "not-the-token")
    page.click("#sign-in")
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Not signed in", timeout=UI_TIMEOUT_MS)
    expect(banner).to_contain_text("(401)")
    expect(page.locator("#token")).to_be_visible()
    page.fill("#token", token)
    page.click("#sign-in")


def pause(page: Page) -> list[str]:
    """From the rollouts list to the rollout's page, and pause it; the confirmations asked."""
    row = page.locator(f'#rollouts tr[data-route="{ROUTE}"]')
    expect(row.locator("td.phase")).to_have_text("running", timeout=UI_TIMEOUT_MS)
    expect(row).to_contain_text(BRAND_VOICE.name)
    row.get_by_role("link", name=ROUTE).click()
    phase = page.locator('dd[data-field="phase"]')
    expect(phase).to_have_text("running", timeout=UI_TIMEOUT_MS)
    expect(page.locator("svg.chart")).to_have_count(5, timeout=UI_TIMEOUT_MS)  # timeline + 4
    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(phase).to_have_text("paused", timeout=UI_TIMEOUT_MS)
    expect(page.locator("p.result")).to_contain_text("Pause: done")
    return asked


def review_one_pair(page: Page) -> str:
    """Prefer answer A of the first pair; the page moves on to the next. Its id."""
    page.get_by_role("link", name="Blind review").click()
    pair = page.locator("article.pair")
    expect(pair).to_be_visible(timeout=UI_TIMEOUT_MS)
    pair_id = pair.get_attribute("data-pair")
    expect(page.locator("#answer-a")).not_to_be_empty()
    expect(page.locator("#answer-b")).not_to_be_empty()
    page.get_by_role("button", name="A is better").click()
    expect(page.locator("p.result")).to_contain_text("Review recorded")
    expect(page.locator("article.pair")).not_to_have_attribute("data-pair", pair_id)
    return pair_id


@pytest.mark.vllm
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian: chromium)")
def test_an_sre_pauses_a_rollout_and_reviews_a_pair_in_the_console(gateway) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    requested: list[str] = []
    page_errors: list[str] = []
    with gateway.admin() as admin, sync_playwright() as playwright:
        start_a_rollout_with_shadow_pairs(gateway, admin)
        token = operator_token(admin, SRE)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requested.append(request.url))
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{gateway.url}/console")
            sign_in(page, token)

            assert pause(page) == [f"Pause the rollout on {ROUTE}?"]
            page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
            rollout = admin.get(f"/admin/rollouts/{ROUTE}").json()
            assert rollout["phase"] == "paused"
            assert rollout["hold"]["actor"] == SRE  # the name of the token it signed in with

            pair_id = review_one_pair(page)
            page.screenshot(path=str(ARTIFACTS / "review.png"), full_page=True)
        finally:
            browser.close()
        # One score for each variant: 1 for the preferred answer, 0 for the other.
        assert reviews(gateway) == (2, 1.0)
        left = admin.get("/admin/shadow-pairs").json()["pairs"]
        assert pair_id not in {p["pair_id"] for p in left}

    assert not page_errors
    assert requested
    outside = [url for url in requested if not url.startswith(f"{gateway.url}/")]
    assert not outside
