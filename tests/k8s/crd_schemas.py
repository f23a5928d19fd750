"""Strict JSON schemas for the Prometheus Operator resources k8s/ uses.

kubernetes-validate knows only Kubernetes' own kinds. These follow the operator's CRDs
(monitoring.coreos.com/v1: field names, types and patterns as there) for the fields the
manifests use, and reject every other field, so a typo fails here rather than being dropped
by the API server's pruning.
"""

from __future__ import annotations

from typing import Any

API_VERSION = "monitoring.coreos.com/v1"

# The CRDs' duration pattern (interval, scrapeTimeout, for, ...).
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# A DNS-1123 label: what a Kubernetes object name in a namespace must be.
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


METADATA = _object(
    {"name": NAME, "namespace": NAME, "labels": STRING_MAP, "annotations": STRING_MAP},
    ["name"],
)

LABEL_SELECTOR = _object(
    {
        "matchLabels": STRING_MAP,
        "matchExpressions": {
            "type": "array",
            "items": _object(
                {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
                ["key", "operator"],
            ),
        },
    },
    [],
)

ENDPOINT = _object(
    {
        "port": {"type": "string", "minLength": 1},  # the Service port's name
        "path": {"type": "string", "pattern": "^/"},
        "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
    },
    ["port"],
)

SERVICE_MONITOR = _object(
    {
        "apiVersion": {"const": API_VERSION},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": _object(
            {
                "jobLabel": {"type": "string"},
                "selector": LABEL_SELECTOR,
                "namespaceSelector": _object(
                    {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                    [],
                ),
                "endpoints": {"type": "array", "items": ENDPOINT, "minItems": 1},
            },
            ["selector", "endpoints"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)

RULE = {
    **_object(
        {
            "record": {"type": "string"},
            "alert": {"type": "string"},
            "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "for": DURATION,
            "keep_firing_for": {**DURATION, "minLength": 1},
            "labels": STRING_MAP,
            "annotations": STRING_MAP,
        },
        ["expr"],
    ),
    # The operator states "only one of record and alert"; the CRD leaves it to Prometheus.
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}

PROMETHEUS_RULE = _object(
    {
        "apiVersion": {"const": API_VERSION},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": _object(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _object(
                        {
                            "name": {"type": "string", "minLength": 1},
                            "interval": DURATION,
                            "limit": {"type": "integer"},
                            "query_offset": DURATION,
                            "labels": STRING_MAP,
                            "rules": {"type": "array", "items": RULE},
                        },
                        ["name"],
                    ),
                }
            },
            ["groups"],
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)

SCHEMAS = {
    (API_VERSION, "ServiceMonitor"): SERVICE_MONITOR,
    (API_VERSION, "PrometheusRule"): PROMETHEUS_RULE,
}
