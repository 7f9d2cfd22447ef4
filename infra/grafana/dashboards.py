#!/usr/bin/env python3
"""Switchyard's Grafana dashboards, as code: this file writes dashboards/*.json (provisioned from files by
provisioning/dashboards/switchyard.yml). Run it after changing a panel; `--check` (the test command) fails when
the committed JSON differs from what it writes. The metric names the panels use are checked against the code by
the Rust test `deploy::dashboards_and_rules_name_only_metrics_the_services_export`."""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(title, targets, unit="short", kind="timeseries", description=""):
    """One panel; `targets` is a list of (PromQL, legend)."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {} if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DS}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def stat(title, expr, unit="short", description=""):
    return panel(title, [(expr, title)], unit, "stat", description)


def dashboard(uid, title, description, panels):
    """Stats are laid out four to a row, graphs two to a row."""
    x = y = 0
    row_height = 0
    laid = []
    for i, p in enumerate(panels):
        w, h = (6, 4) if p["type"] == "stat" else (12, 8)
        if x + w > 24:
            x, y = 0, y + row_height
            row_height = 0
        laid.append({**p, "id": i + 1, "gridPos": {"x": x, "y": y, "w": w, "h": h}})
        x += w
        row_height = max(row_height, h)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["switchyard"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                 "current": {}, "hide": 0}
            ]
        },
        "panels": laid,
    }


def rate(metric, by="", window="5m"):
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}[{window}]))"


DASHBOARDS = {
    "operations": dashboard(
        "switchyard-operations",
        "Switchyard / Operations and floor",
        "Sessions running, starting and ending across the platform; live pushes; the outbox.",
        [
            stat("Sessions running", 'max(sessions_active{kind="session"})'),
            stat("Rentals running", "max(active_rentals_total)"),
            stat("Sessions started (1 h)", 'sum(increase(sessions_created_total{kind="session"}[1h]))'),
            stat("Live subscriptions open", "sum(graphql_ws_connections_open)"),
            panel("Sessions running", [("max by (kind) (sessions_active)", "{{kind}}")]),
            panel("Starts and ends per minute", [
                ("60 * " + rate("sessions_created_total", "kind"), "started {{kind}}"),
                ("60 * " + rate("sessions_completed_total", "kind, outcome"), "{{outcome}} {{kind}}"),
            ], "short"),
            panel("Session duration", [
                ('histogram_quantile(0.5, sum by (le) (rate(sessions_duration_seconds_bucket{kind="session"}[1h])))', "p50"),
                ('histogram_quantile(0.9, sum by (le) (rate(sessions_duration_seconds_bucket{kind="session"}[1h])))', "p90"),
            ], "s"),
            panel("Live events delivered per second", [(rate("live_events_delivered_total"), "events/s")], "ops"),
            panel("Notifications by channel and outcome (per minute)", [
                ("60 * " + rate("notifications_sent_total", "channel, outcome"), "{{channel}} {{outcome}}"),
            ]),
            panel("Notifications queued by kind (per minute)", [
                ("60 * " + rate("notifications_enqueued_total", "kind"), "{{kind}}"),
            ]),
        ],
    ),
    "billing": dashboard(
        "switchyard-billing",
        "Switchyard / Billing and ledger",
        "The billing tick, payments, refunds, webhooks and debt collection.",
        [
            stat("Billing backlog age", "max(billing_oldest_due_seconds)", "s",
                 "How long the oldest session due for billing has waited (alert: over 2 minutes)."),
            stat("Debt collection success", "min(debt_collection_success_rate)", "percentunit"),
            stat("Charges (1 h)", "sum(increase(billing_charges_total[1h]))"),
            stat("Payment failures (1 h)", "sum(increase(payments_failed_total[1h]))"),
            panel("Billing tick", [
                ("60 * " + rate("billing_charges_total"), "charges/min"),
                ("60 * " + rate("billing_sessions_total", "outcome"), "sessions {{outcome}}/min"),
            ]),
            panel("Billing pass time", [
                ('max(billing_pass_seconds{quantile="0.99"})', "p99"),
                ('max(billing_pass_seconds{quantile="0.5"})', "p50"),
            ], "s"),
            panel("Payments per minute", [
                ("60 * " + rate("payments_intents_total", "provider"), "created {{provider}}"),
                ("60 * " + rate("payments_confirmed_total", "kind"), "confirmed {{kind}}"),
                ("60 * " + rate("payments_failed_total", "reason"), "failed {{reason}}"),
                ("60 * " + rate("payments_refunds_total"), "refunds"),
            ]),
            panel("Stripe webhooks per minute", [
                ("60 * " + rate("payments_webhook_received_total", "type"), "{{type}}"),
                ("60 * " + rate("payments_webhook_retry_total"), "asked to retry"),
                ("60 * " + rate("payments_webhook_mismatch_total", "field"), "mismatch {{field}}"),
            ]),
            panel("Debt collection per hour", [
                ("3600 * " + rate("debt_collection_passes_total", "outcome", "1h"), "{{outcome}}"),
            ]),
            panel("Debt collected (minor units per hour, all currencies)", [
                ("3600 * " + rate("debt_collected_minor_units_total", "", "1h"), "collected"),
            ]),
        ],
    ),
    "rentals": dashboard(
        "switchyard-rentals",
        "Switchyard / Rentals",
        "Powerbank rentals: running, started, returned or bought out; deposit holds.",
        [
            stat("Rentals running", "max(active_rentals_total)"),
            stat("Rentals started (24 h)", 'sum(increase(sessions_created_total{kind="rental"}[24h]))'),
            stat("Bought out (24 h)", 'sum(increase(sessions_completed_total{kind="rental", outcome="bought_out"}[24h]))'),
            stat("Deposit holds settled (24 h)", "sum(increase(payments_deposit_holds_settled_total[24h]))"),
            panel("Rentals running", [("max(active_rentals_total)", "running")]),
            panel("Rentals started and ended per hour", [
                ('3600 * sum(rate(sessions_created_total{kind="rental"}[1h]))', "started"),
                ('3600 * sum by (outcome) (rate(sessions_completed_total{kind="rental"}[1h]))', "{{outcome}}"),
            ]),
            panel("Rental duration", [
                ('histogram_quantile(0.5, sum by (le) (rate(sessions_duration_seconds_bucket{kind="rental"}[6h])))', "p50"),
                ('histogram_quantile(0.9, sum by (le) (rate(sessions_duration_seconds_bucket{kind="rental"}[6h])))', "p90"),
            ], "s"),
            panel("Cabinet anomalies per hour", [
                ("3600 * " + rate("edge_anomalies_total", "kind", "1h"), "{{kind}}"),
            ]),
        ],
    ),
    "charging": dashboard(
        "switchyard-charging",
        "Switchyard / Charging (OCPP)",
        "Chargers connected, messages, transactions and calls to chargers.",
        [
            stat("Chargers connected", "sum(ocpp_connections_open)"),
            stat("Chargers offline", "max(ocpp_chargers_offline)"),
            stat("Transactions started (1 h)", "sum(increase(ocpp_transactions_started_total[1h]))"),
            stat("Connections refused (1 h)", "sum(increase(ocpp_connections_refused_total[1h]))"),
            panel("Messages per second by action", [(rate("ocpp_messages_total", "action"), "{{action}}")], "ops"),
            panel("Message handling time", [
                ('max(ocpp_message_seconds{quantile="0.99"})', "p99"),
                ('max(ocpp_message_seconds{quantile="0.5"})', "p50"),
            ], "s"),
            panel("Transactions per hour", [
                ("3600 * " + rate("ocpp_transactions_started_total", "auth", "1h"), "started ({{auth}})"),
                ("3600 * " + rate("ocpp_transactions_stopped_total", "", "1h"), "stopped"),
                ("3600 * " + rate("ocpp_unknown_transaction_stops_total", "", "1h"), "unknown stops"),
            ]),
            panel("Calls to chargers per minute", [
                ("60 * " + rate("ocpp_calls_total", "action, outcome"), "{{action}} {{outcome}}"),
            ]),
            panel("Connections", [
                ("sum(ocpp_connections_open)", "open"),
                ("60 * " + rate("ocpp_connections_refused_total", "reason"), "refused {{reason}}/min"),
                ("60 * " + rate("ocpp_connections_dead_total"), "found dead/min"),
            ]),
            panel("Through bridges", [
                ("sum(edge_ocpp_relayed_open)", "relayed chargers"),
                ("60 * " + rate("edge_ocpp_journaled_total"), "journaled messages/min"),
            ]),
        ],
    ),
    "edge": dashboard(
        "switchyard-edge",
        "Switchyard / Edge bridges and devices",
        "Tunnels, bridges and PC agents offline, events and commands.",
        [
            stat("Tunnels open", "sum(edge_tunnels_open)"),
            stat("Bridges offline > 5 min", "max(edge_bridges_offline)"),
            stat("PC agents offline > 5 min", "max(agents_offline)"),
            stat("Ejects waiting for staff", "max(edge_ejects_unanswered)"),
            stat("Anomalies (24 h)", "sum(increase(edge_anomalies_total[24h]))"),
            panel("Tunnels and offline devices", [
                ("sum(edge_tunnels_open)", "tunnels open"),
                ("max(edge_bridges_offline)", "bridges offline"),
                ("max(agents_offline)", "agents offline"),
            ]),
            panel("Events and commands per minute", [
                ("60 * " + rate("edge_events_total", "outcome"), "events {{outcome}}"),
                ("60 * " + rate("edge_commands_delivered_total"), "commands delivered"),
            ]),
            panel("Anomalies per hour", [("3600 * " + rate("edge_anomalies_total", "kind", "1h"), "{{kind}}")]),
            panel("Tunnels closed for flooding (per hour)", [
                ("3600 * " + rate("edge_tunnels_flooded_total", "", "1h"), "flooded"),
            ]),
        ],
    ),
    "http": dashboard(
        "switchyard-http",
        "Switchyard / HTTP and GraphQL",
        "Requests, errors and latency by route; the database pool; fairness and login throttling.",
        [
            stat("Requests per second", 'sum(rate(http_requests_total{job="switchyard-api"}[5m]))', "reqps"),
            stat("5xx share", 'sum(rate(http_requests_total{status=~"5.."}[5m])) / sum(rate(http_requests_total[5m]))',
                 "percentunit"),
            stat("p99 latency", "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
                 "s"),
            stat("Panics (24 h)", "sum(increase(http_panics_total[24h]))"),
            panel("Requests per second by route", [(rate("http_requests_total", "route"), "{{route}}")], "reqps"),
            panel("Responses by status", [(rate("http_requests_total", "status"), "{{status}}")], "reqps"),
            panel("p99 latency by route", [
                ("histogram_quantile(0.99, sum by (route, le) (rate(http_request_duration_seconds_bucket[5m])))",
                 "{{route}}"),
            ], "s"),
            panel("Database pool in use", [
                ('(max by (instance) (db_pool_connections{state="open"}) - max by (instance) '
                 '(db_pool_connections{state="idle"})) / max by (instance) (db_pool_connections{state="max"})',
                 "{{instance}}"),
            ], "percentunit"),
            panel("Refused: tenant fairness and login throttling (per minute)", [
                ("60 * " + rate("tenant_requests_refused_total"), "tenant over its share"),
                ("60 * " + rate("switchyard_auth_throttled_total"), "logins throttled"),
                ("60 * " + rate("switchyard_auth_hash_refused_total"), "password hashing busy"),
            ]),
            panel("Live subscriptions", [("sum(graphql_ws_connections_open)", "open")]),
        ],
    ),
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, board in DASHBOARDS.items():
        path = OUT / f"{name}.json"
        text = json.dumps(board, indent=2, sort_keys=True) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    extra = sorted(p.name for p in OUT.glob("*.json") if p.stem not in DASHBOARDS)
    if stale or extra:
        sys.exit(f"dashboards out of date: {stale + extra}; run infra/grafana/dashboards.py")


if __name__ == "__main__":
    main()
