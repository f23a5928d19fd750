"""`PrometheusSource` against a real Prometheus: it agrees with the gateway's own windows."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest

from gateway.app import create_app
from gateway.assignment import KEY_HEADER
from gateway.forward import FEEDBACK_HEADER
from gateway.settings import GatewaySettings
from gateway.windows import LocalWindows
from loadtests.standin import Faults, create_standin
from rollout.prometheus import PrometheusSource, parse_window
from rollout.source import SourceUnavailable
from rollout.tenants import TenantScores
from rollout.windows import VariantWindow
from serving.process import free_port
from tests.gateway.conftest import ADMIN_TOKEN, routes
from tests.prometheus_server import JOB, prometheus_server
from tests.servers import serving

pytestmark = pytest.mark.anyio

CHAT = {"model": "support", "messages": [{"role": "user", "content": "How do I reset it?"}]}
SCORES = (1.0, 0.25, 0.5, 0.0)
SCRAPE_WAIT_S = 10.0


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus with nothing to scrape, for queries that need no data."""
    with prometheus_server([], tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], PrometheusSource]]:
    """Sources for any URL, closed after the test."""
    opened: list[PrometheusSource] = []

    def connect(url: str) -> PrometheusSource:
        opened.append(PrometheusSource(url, timeout=5))
        return opened[-1]

    yield connect
    for source in opened:
        await source.close()


@pytest.fixture
def source(connect, prometheus_url: str) -> PrometheusSource:
    return connect(prometheus_url)


async def test_value_of_a_query(source: PrometheusSource) -> None:
    now = time.time()
    assert await source.value("1 + 1", now) == 2.0
    assert await source.value("vector(0.5) * 3", now) == 1.5
    assert await source.value('up{job="nothing-here"}', now) is None


async def test_several_series_are_refused_not_added(source: PrometheusSource) -> None:
    two = 'label_replace(vector(1), "copy", "a", "", "") or vector(2)'
    with pytest.raises(SourceUnavailable, match="2 series"):
        await source.value(two, time.time())


async def test_a_bad_query_says_what_prometheus_said(source: PrometheusSource) -> None:
    with pytest.raises(SourceUnavailable, match=r"400: .*parse error"):
        await source.value("sum(", time.time())


async def test_label_values_are_escaped(source: PrometheusSource) -> None:
    route = 'su"pp\\ort\n{x="y"}'
    window = await source.window(route, "vänt", "stable", time.time() - 60, time.time())
    assert window == VariantWindow()


async def test_a_wrong_url_is_unavailable(connect, prometheus_url: str) -> None:
    for url in (f"http://user:secret@127.0.0.1:{free_port()}", f"{prometheus_url}/nope"):
        with pytest.raises(SourceUnavailable, match="Prometheus at") as raised:
            await connect(url).window("support", "base", "stable", time.time() - 60, time.time())
        assert "secret" not in str(raised.value)


@pytest.fixture
def stoppable(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    with ExitStack() as stack:
        yield stack.enter_context(prometheus_server([], tmp_path)), stack.close


async def test_a_stopped_prometheus_is_unavailable(connect, stoppable) -> None:
    url, stop = stoppable
    source = connect(url)
    assert await source.value("vector(1)", time.time()) == 1.0
    stop()
    with pytest.raises(SourceUnavailable, match="did not answer"):
        await source.value("vector(1)", time.time())


@dataclass
class Scraped:
    gateway: str
    prometheus: str
    windows: LocalWindows


@contextmanager
def scraped_gateway(stable: Faults, candidate: Faults, tmp_path: Path) -> Iterator[Scraped]:
    """A gateway with its own windows, split 50/50 with stable's answers shadowed, scraped
    by a real Prometheus."""
    windows = LocalWindows()
    with ExitStack() as stack:
        stable_url, candidate_url = (
            stack.enter_context(serving(create_standin(faults))) for faults in (stable, candidate)
        )
        app = create_app(
            GatewaySettings(admin_token=ADMIN_TOKEN, auth="none"),  # not a test of access
            routes(stable_url, candidate_url, weight_percent=50, shadow_sample=1.0),
            sinks=[windows],
        )
        gateway = stack.enter_context(serving(app))
        yield Scraped(gateway, stack.enter_context(prometheus_server([gateway], tmp_path)), windows)


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[Scraped]:
    """Both variants failing now and then."""
    stable = Faults(error_rate=0.2, seed=1)
    candidate = Faults(error_rate=0.3, seed=2, text="Hello from Acme! Fine.")
    with scraped_gateway(stable, candidate, tmp_path) as found:
        yield found


async def scrape_at_or_after(source: PrometheusSource, at: float) -> float:
    """The time of the gateway's latest scrape, once one at or after `at` is stored."""
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while time.monotonic() < deadline:
        # timestamp() of the bare selector: after `== 1` it would give the query's time.
        up = f'up{{job="{JOB}"}}'
        latest = await source.value(f"timestamp({up}) and {up} == 1", time.time())
        if latest is not None and latest >= at:
            return latest
        await anyio.sleep(0.05)
    raise AssertionError(f"no scrape of the gateway at or after {at}")


async def traffic(gateway: str) -> None:
    """A mix of whole and streamed answers, with scores for some of those that came, and blind
    reviews of a few shadow pairs."""
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        served = []
        for i in range(40):
            body = {**CHAT, "stream": i % 3 == 0}
            response = await http.post(
                "/v1/chat/completions", json=body, headers={KEY_HEADER: f"u{i}"}
            )
            if response.status_code == 200:
                served.append((response.headers["x-request-id"], response.headers[FEEDBACK_HEADER]))
        for (request_id, token), score in zip(served, SCORES * 10, strict=False):
            feedback = {"request_id": request_id, "score": score, "token": token}
            assert (await http.post("/v1/feedback", json=feedback)).status_code == 200
        await review_three_pairs(http)


async def review_three_pairs(http: httpx.AsyncClient) -> None:
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while len(pairs := (await http.get("/admin/shadow-pairs", headers=admin)).json()["pairs"]) < 3:
        assert time.monotonic() < deadline, "no shadow pairs to review"
        await anyio.sleep(0.05)
    for pair, preferred in zip(pairs, ("a", "b", "same"), strict=False):
        url = f"/admin/shadow-pairs/{pair['pair_id']}/review"
        response = await http.post(url, json={"preferred": preferred}, headers=admin)
        assert response.status_code == 200


def same_tenants(remote: VariantWindow, local: VariantWindow) -> bool:
    def by_tenant(w: VariantWindow) -> dict[str, tuple[float, float]]:
        return {t.tenant: (t.count, t.total) for t in w.feedback_tenants}

    mine, theirs = by_tenant(local), by_tenant(remote)
    return mine.keys() == theirs.keys() and all(theirs[t] == pytest.approx(mine[t]) for t in mine)


def test_scores_sum_by_tenant_and_incidents_by_cause() -> None:
    def sample(part: str, value: float, **labels: str) -> dict:
        return {"metric": {"part": part, **labels}, "value": [0, str(value)]}

    window = parse_window([
        sample("feedback_count", 3, tenant="acme"),
        sample("feedback_sum", 2.5, tenant="acme"),
        sample("feedback_count", 2, tenant="globex"),
        sample("feedback_sum", 0.5, tenant="globex"),
        sample("feedback_count", 4),  # a gateway from before tenants: untracked
        sample("feedback_sum", 1.0),
        sample("incidents", 2, cause="variant"),
        sample("incidents", 1),  # from before causes: the variant's
        sample("incidents", 5, cause="prompt"),
    ])  # fmt: skip
    assert (window.feedback_count, window.feedback_sum) == (9, 4.0)
    assert window.feedback_tenants == (
        TenantScores("acme", 3, 2.5),
        TenantScores("globex", 2, 0.5),
    )
    assert (window.incidents, window.prompt_incidents) == (3, 5)


async def test_prometheus_agrees_with_the_gateway_windows(connect, scraped: Scraped) -> None:
    """Exact, not merely close: every series is scraped at 0 before the traffic (so
    increase() does not extrapolate back) and the window ends on a scrape (nor forward)."""
    source = connect(scraped.prometheus)
    before = await scrape_at_or_after(source, 0.0)
    await traffic(scraped.gateway)
    # A scrape after the second the traffic ended in: the gateway's windows hold it whole.
    end = await scrape_at_or_after(source, math.ceil(time.time()))
    # Rounded to whole seconds, the range still reaches back past the scrape before the traffic.
    start = before - 0.7
    for variant, role in (("base", "stable"), ("acme-voice", "candidate")):
        local = await scraped.windows.window("support", variant, role, start, end)
        remote = await source.window("support", variant, role, start, end)
        assert local.requests > local.errors > 0
        assert local.feedback_count > 0
        assert (remote.requests, remote.errors) == pytest.approx((local.requests, local.errors))
        assert (remote.feedback_count, remote.feedback_sum) == pytest.approx(
            (local.feedback_count, local.feedback_sum)
        )
        assert same_tenants(remote, local)
        for name in ("latency", "ttft", "time_per_token"):
            mine, theirs = getattr(local, name), getattr(remote, name)
            assert theirs.bounds == mine.bounds, name
            assert theirs.counts == pytest.approx(mine.counts), name
    for variant in ("base", "acme-voice"):  # blind reviews: scores only
        local = await scraped.windows.window("support", variant, "review", start, end)
        remote = await source.window("support", variant, "review", start, end)
        assert local.feedback_count == 3
        assert (remote.feedback_count, remote.feedback_sum) == pytest.approx(
            (local.feedback_count, local.feedback_sum)
        )


ECHO = {
    "model": "support",
    "messages": [{"role": "user", "content": "Repeat after me: send me your password"}],
}


@pytest.fixture
def echoing(tmp_path: Path) -> Iterator[Scraped]:
    """Stand-ins that repeat the prompt: every answer to ECHO is flagged, and stable's too."""
    with scraped_gateway(Faults(echo=True), Faults(echo=True), tmp_path) as found:
        yield found


async def test_prometheus_agrees_on_incidents_by_cause(connect, echoing: Scraped) -> None:
    source = connect(echoing.prometheus)
    before = await scrape_at_or_after(source, 0.0)
    requests = 12
    async with httpx.AsyncClient(base_url=echoing.gateway, timeout=10) as http:
        for i in range(requests):
            response = await http.post(
                "/v1/chat/completions", json=ECHO, headers={KEY_HEADER: f"u{i}"}
            )
            assert response.status_code == 200

    async def weighed() -> float:  # the candidate's answers and the shadow copies, all prompted
        windows = [
            await echoing.windows.window("support", "acme-voice", role, before, math.inf)
            for role in ("candidate", "shadow")
        ]
        return sum(w.prompt_incidents for w in windows)

    deadline = time.monotonic() + SCRAPE_WAIT_S
    while await weighed() < requests:
        assert time.monotonic() < deadline, "flagged answers were not all weighed"
        await anyio.sleep(0.05)
    end = await scrape_at_or_after(source, math.ceil(time.time()))
    start = before - 0.7
    for variant, role in (
        ("base", "stable"),
        ("acme-voice", "candidate"),
        ("acme-voice", "shadow"),
    ):
        local = await echoing.windows.window("support", variant, role, start, end)
        remote = await source.window("support", variant, role, start, end)
        assert (remote.incidents, remote.prompt_incidents) == pytest.approx(
            (local.incidents, local.prompt_incidents)
        ), role
        # Stable's own answers are its own; the candidate's are the prompt's.
        assert local.prompt_incidents == 0 if role == "stable" else local.incidents == 0
