"""Pool configuration, DNS answers and probe parsing: pure, no servers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from gateway.balancer import BalancerConfig
from gateway.discovery import base_urls, discover, split_host_port
from gateway.probe import parse_load, parse_models
from gateway.routes import BackendSpec


def spec(**fields) -> BackendSpec:
    return BackendSpec.model_validate(fields)


def test_one_url_a_list_or_a_dns_name():
    assert spec(url="http://a:8000").static_urls() == ["http://a:8000"]
    assert spec(urls=["http://a:8000", "http://b:8000"]).static_urls() == [
        "http://a:8000",
        "http://b:8000",
    ]
    assert spec(dns="rollgate-vllm:8000").static_urls() is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "exactly one of url, urls or dns (got none)"),
        ({"url": "http://a:1", "dns": "a:1"}, "exactly one of url, urls or dns (got url, dns)"),
        ({"url": "https://a:8000"}, "url"),
        ({"urls": ["http://a:1", "ftp://b:1"]}, "'ftp://b:1' is not an http:// URL"),
        ({"urls": ["http://a:1", "http://a:1"]}, "each replica once"),
        ({"urls": []}, "urls"),
        ({"dns": "rollgate-vllm"}, "dns"),
        ({"dns": "a:1", "probe_interval_s": 0}, "probe_interval_s"),
        ({"dns": "a:1", "balancing": {"eject_after": 0}}, "eject_after"),
        ({"dns": "a:1", "balancing": {"ejection_s": 60, "max_ejection_s": 30}}, "cool-downs"),
        ({"dns": "a:1", "balancing": {"max_kv_usage": 1.5}}, "max_kv_usage"),
        ({"dns": "a:1", "balancing": {"spread": "even"}}, "spread"),
    ],
)
def test_bad_pools_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec(**fields)


def test_balancing_overrides_only_what_is_given():
    config = spec(dns="a:1", balancing={"eject_after": 5, "max_waiting": 0}).balancing.config()
    assert config == BalancerConfig(eject_after=5, max_waiting=0)
    assert spec(dns="a:1").balancing.config() == BalancerConfig()


def test_dns_answers_become_distinct_sorted_base_urls():
    assert base_urls(["10.0.0.2", "10.0.0.1", "10.0.0.2", "fd00::5"], 8000) == [
        "http://10.0.0.1:8000",
        "http://10.0.0.2:8000",
        "http://[fd00::5]:8000",
    ]
    assert split_host_port("rollgate-vllm.rollgate.svc:8000") == (
        "rollgate-vllm.rollgate.svc",
        8000,
    )
    for bad in ("rollgate-vllm", ":8000", "a:0", "a:70000", "a:x"):
        with pytest.raises(ValueError, match="host:port"):
            split_host_port(bad)


def test_discover_asks_the_resolver_for_the_host_and_port():
    asked = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.3", "127.0.0.2"]

    urls = asyncio.run(discover("vllm:9000", resolver))
    assert urls == ["http://127.0.0.2:9000", "http://127.0.0.3:9000"]
    assert asked == [("vllm", 9000)]


def test_models_from_the_v1_models_list():
    body = (
        b'{"object":"list","data":[{"id":"tiny-llama"},{"id":"acme-voice","parent":"tiny-llama"}]}'
    )
    assert parse_models(body) == {"tiny-llama", "acme-voice"}
    for bad in (b"not json", b'{"data": 3}', b'{"object": "list"}', b'{"data": [{"x": 1}]}'):
        assert parse_models(bad) is None


VLLM_METRICS = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny-llama"} 3.0
vllm:num_requests_waiting{engine="1",model_name="tiny-llama"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny-llama"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny-llama"} 0.75
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny-llama"} 7.0
"""


def test_load_is_the_queue_summed_and_the_fullest_kv_cache():
    assert parse_load(VLLM_METRICS) == (5.0, 0.75)
    assert parse_load("# TYPE other gauge\nother 1\n") == (None, None)
