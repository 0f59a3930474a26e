"""The OpenAPI 3.0 description of the hook's HTTP API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from .webhook import MAX_DEPTH, MAX_NUMBER_CHARS

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_ALERT = {
    "type": "object",
    "required": ["labels", "startsAt"],
    "properties": {
        "status": {
            "type": "string",
            "enum": ["firing", "resolved"],
            "description": "absent (some relays): the group's status",
        },
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "startsAt": {"type": "string", "format": "date-time"},
        "endsAt": {"type": "string", "format": "date-time"},
        "generatorURL": {"type": "string"},
        "fingerprint": {
            "type": "string",
            "description": "absent or empty (Alertmanager before 0.19): derived from the labels "
            "as Alertmanager computes it (FNV-1a 64 of the sorted label pairs, 16 hex digits)",
        },
    },
}
_PAYLOAD = {
    "type": "object",
    "description": "Alertmanager webhook payload, version 4: UTF-8 JSON of at most 4 MiB, "
    f"nested at most {MAX_DEPTH} deep, numbers at most {MAX_NUMBER_CHARS} characters",
    "required": ["version", "groupKey", "status", "alerts"],
    "properties": {
        "version": {"type": "string", "enum": ["4"]},
        "groupKey": {"type": "string", "minLength": 1},
        "truncatedAlerts": {"type": "integer", "minimum": 0},
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "receiver": {"type": "string"},
        "groupLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "commonAnnotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "externalURL": {"type": "string"},
        "alerts": {"type": "array", "minItems": 1, "items": _ALERT},
    },
}
_ENTRY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "key": {"type": "string"},
        "policy": {"type": "string"},
        "kind": {
            "type": "string",
            "enum": ["scale_pool", "cpu_fallback", "notify_only", "revert"],
        },
        "status": {
            "type": "string",
            "enum": ["decided", "acted", "advised", "skipped", "failed", "pending"],
        },
        "reason": {"type": "string"},
        "alertname": {"type": "string"},
        "fingerprint": {"type": "string"},
        "slo": {"type": "string"},
        "target": {"type": "string"},
        "plan": {"type": "object"},
        "due": {"type": "string", "nullable": True},
        "parent": {"type": "integer", "nullable": True},
        "created": {"type": "string"},
        "updated": {"type": "string"},
    },
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "gpuslo remediation hook",
        "version": "1",
        "description": "Receives Alertmanager webhooks and acts on burning SLO budgets, "
        "within policy bounds and guardrails; every decision is journaled.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Payload": _PAYLOAD, "Alert": _ALERT, "Entry": _ENTRY},
    },
    "paths": {
        "/v1/alerts": {
            "post": {
                "summary": "Alertmanager webhook receiver",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Payload"}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "one outcome per (alert, matching policy)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "outcomes": {"type": "array", "items": {"type": "object"}}
                                    },
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "408": _ERROR,
                    "411": _ERROR,
                    "413": _ERROR,
                },
            }
        },
        "/v1/actions": {
            "get": {
                "summary": "The decision journal, newest first",
                "security": _BEARER,
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("policy", "status", "slo", "kind")
                ]
                + [
                    {"name": "since", "in": "query", "schema": {"type": "number"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {
                    "200": {
                        "description": "journal entries",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "actions": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Entry"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                },
            }
        },
        "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
    },
}
