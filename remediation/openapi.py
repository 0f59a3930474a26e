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
            "enum": ["scale_pool", "promote_warm", "cpu_fallback", "notify_only", "revert"],
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
_CAUSE = {
    "type": "object",
    "properties": {
        "kind": {"type": "string"},
        "entity": {"type": "object", "additionalProperties": {"type": "string"}},
        "score": {"type": "number"},
        "summary": {"type": "string"},
        "evidence": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "signal": {"type": "string"},
                    "changed_at": {"type": "number", "description": "Unix seconds"},
                    "before": {"type": "number", "nullable": True},
                    "after": {"type": "number", "nullable": True},
                    "effect": {"type": "number"},
                    "p_value": {"type": "number"},
                    "query": {"type": "string", "description": "the PromQL"},
                    "series": {
                        "type": "array",
                        "description": "[Unix seconds, value] pairs (top causes only)",
                        "items": {"type": "array", "items": {"type": "number"}},
                    },
                },
            },
        },
    },
}
_TIME = {"type": "string", "format": "date-time"}
_NULL_TIME = {"type": "string", "format": "date-time", "nullable": True}
_INCIDENT = {
    "type": "object",
    "description": "one firing episode of one page (Alertmanager's fingerprint + startsAt)",
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string", "description": "the HTML page"},
        "slo": {"type": "string"},
        "service": {"type": "string"},
        "tier": {"type": "string"},
        "severity": {"type": "string"},
        "alertname": {"type": "string"},
        "fingerprint": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "started_at": _TIME,
        "received_at": _TIME,
        "explained_at": _NULL_TIME,
        "resolved_at": _NULL_TIME,
        "summary": {"type": "string"},
        "explanation": {
            "type": "object",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["pending", "explained", "failed", "skipped", "unavailable"],
                },
                "reason": {"type": "string"},
                "detected": {"type": "number"},
                "onset": {"type": "number"},
                "candidates": {"type": "integer"},
                "radius": {"type": "object"},
                "causes": {"type": "array", "items": {"$ref": "#/components/schemas/Cause"}},
            },
        },
        "actions": {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}},
        "deliveries": {
            "type": "object",
            "description": "per target (chat, webhook, grafana): when the message and the "
            "update went out, or the last error",
        },
    },
}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

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
        "schemas": {
            "Payload": _PAYLOAD,
            "Alert": _ALERT,
            "Entry": _ENTRY,
            "Incident": _INCIDENT,
            "Cause": _CAUSE,
        },
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
                        "description": "one outcome per (alert, matching policy), and the "
                        "ids of the delivery's incidents",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "outcomes": {"type": "array", "items": {"type": "object"}},
                                        "incidents": {"type": "array", "items": {"type": "string"}},
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
        "/v1/incidents": {
            "get": {
                "summary": "Incidents (every page), newest first",
                "security": _BEARER,
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("slo", "service", "tier", "status")
                ]
                + [
                    {"name": "since", "in": "query", "schema": {"type": "number"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "responses": {
                    "200": {
                        "description": "incidents",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "incidents": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Incident"},
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
        "/v1/incidents/{id}": {
            "get": {
                "summary": "One incident",
                "security": _BEARER,
                "parameters": _ID,
                "responses": {
                    "200": {
                        "description": "the incident",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Incident"}
                            }
                        },
                    },
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/incidents/{id}": {
            "get": {
                "summary": "One incident's HTML page, with evidence charts (bearer token unless "
                "settings.incidents.open_pages)",
                "security": _BEARER,
                "parameters": _ID,
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {}}},
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/incidents/open": {
            "get": {
                "summary": "Redirect to the newest incident of an SLO and tier (the alerts' "
                "incident_url annotation)",
                "security": _BEARER,
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("slo", "service", "tier")
                ],
                "responses": {"302": {"description": "to /incidents/{id}"}, "404": _ERROR},
            }
        },
        "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
    },
}
