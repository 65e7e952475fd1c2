"""Each provider module on its published example: signature first, then the mapping."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from counterpoint.infra.intake import PROVIDERS, configured_secrets
from counterpoint.infra.intake.base import (
    Accepted,
    BadPayload,
    BadSignature,
    Clock,
    Ignored,
    Provider,
)
from counterpoint.infra.intake.zendesk import TRIGGER_BODY
from counterpoint.infra.publishing import TOPICS
from counterpoint.schemas.events import AlertmanagerWebhook, SimpleAlert, Ticket
from counterpoint.schemas.identity import alert_request_id, lead_alert
from tests.support.provider_webhooks import EXAMPLES, example, lower, signed

SECRET = "It's a Secret to Everybody"
NOW = time.time()
CLOCK = Clock(datetime.fromtimestamp(NOW, UTC), 300)


def verify(name: str, headers: dict[str, str], raw: bytes, clock: Clock = CLOCK) -> None:
    PROVIDERS[name].verify(SECRET.encode(), lower(headers), raw, clock)


def interpret(name: str, headers: dict[str, str], raw: bytes) -> Accepted | Ignored:
    return PROVIDERS[name].interpret(lower(headers), orjson.loads(raw))


def accepted(name: str, raw: bytes | None = None, **headers: str) -> Accepted:
    raw = raw if raw is not None else example(EXAMPLES[name])
    sent = {**signed(name, SECRET, raw, at=NOW), **headers}
    verify(name, sent, raw)
    result = interpret(name, sent, raw)
    assert isinstance(result, Accepted), result
    return result


# --- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_published_example_signed_as_documented_verifies(name: str) -> None:
    raw = example(EXAMPLES[name])
    verify(name, signed(name, SECRET, raw, at=NOW), raw)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_changed_body_or_another_secret_is_a_bad_signature(name: str) -> None:
    raw = example(EXAMPLES[name])
    headers = signed(name, SECRET, raw, at=NOW)
    with pytest.raises(BadSignature, match="does not match"):
        verify(name, headers, raw.replace(b"e", b"E", 1))
    with pytest.raises(BadSignature, match="does not match"):
        verify(name, signed(name, "another secret", raw, at=NOW), raw)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_missing_or_garbled_signature_header_is_named(name: str) -> None:
    raw = example(EXAMPLES[name])
    header = PROVIDERS[name].signature_header
    headers = signed(name, SECRET, raw, at=NOW)
    without = {k: v for k, v in headers.items() if k != header}
    with pytest.raises(BadSignature, match=f"{header}: missing"):
        verify(name, without, raw)
    with pytest.raises(BadSignature, match=header):
        verify(name, {**headers, header: "ü not a signature"}, raw)


def test_github_signature_matches_githubs_documented_test_vector() -> None:
    # docs.github.com "Validating webhook deliveries": this secret and payload give this header.
    headers = {"x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c2"
               "2c46f4379c8b043e17"}
    PROVIDERS["github"].verify(SECRET.encode(), headers, b"Hello, World!", CLOCK)


def test_pagerduty_accepts_any_of_the_signatures_sent_while_a_secret_rotates() -> None:
    raw = example(EXAMPLES["pagerduty"])
    good = signed("pagerduty", SECRET, raw)["X-PagerDuty-Signature"]
    old = signed("pagerduty", "the old secret", raw)["X-PagerDuty-Signature"]
    verify("pagerduty", {"X-PagerDuty-Signature": f"{old},{good}"}, raw)
    verify("pagerduty", {"X-PagerDuty-Signature": f"v2=abcd, {good}"}, raw)
    with pytest.raises(BadSignature, match="no v1="):
        verify("pagerduty", {"X-PagerDuty-Signature": "v2=" + good[3:]}, raw)


@pytest.mark.parametrize("name", ["zendesk", "grafana"])
def test_a_signature_made_too_long_ago_or_ahead_is_refused(name: str) -> None:
    raw = example(EXAMPLES[name])
    for drift in (-301, 301):
        headers = signed(name, SECRET, raw, at=NOW + drift)
        with pytest.raises(BadSignature, match="away from now"):
            verify(name, headers, raw)
    verify(name, signed(name, SECRET, raw, at=NOW - 299), raw)


def test_zendesk_timestamp_is_part_of_what_is_signed() -> None:
    raw = example(EXAMPLES["zendesk"])
    headers = signed("zendesk", SECRET, raw, at=NOW)
    later = datetime.fromtimestamp(int(NOW) + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(BadSignature, match="does not match"):
        verify("zendesk", {**headers, "X-Zendesk-Webhook-Signature-Timestamp": later}, raw)


def test_grafana_without_a_timestamp_header_signs_the_body_alone() -> None:
    raw = example(EXAMPLES["grafana"])
    body_only = signed("github", SECRET, raw)["X-Hub-Signature-256"].removeprefix("sha256=")
    verify("grafana", {"X-Grafana-Alerting-Signature": body_only}, raw)
    stamped = signed("grafana", SECRET, raw, at=NOW)
    with pytest.raises(BadSignature, match="does not match"):  # a stripped timestamp
        verify("grafana", {"X-Grafana-Alerting-Signature":
                           stamped["X-Grafana-Alerting-Signature"]}, raw)


def test_jira_accepts_the_websub_methods_it_may_sign_with_and_refuses_sha1() -> None:
    raw = example(EXAMPLES["jira"])
    digest = hmac.new(SECRET.encode(), raw, hashlib.sha512).hexdigest()
    verify("jira", {"X-Hub-Signature": "sha512=" + digest}, raw)
    sha1 = hmac.new(SECRET.encode(), raw, hashlib.sha1).hexdigest()
    with pytest.raises(BadSignature, match="expected sha256="):
        verify("jira", {"X-Hub-Signature": "sha1=" + sha1}, raw)


# --- mapping ---------------------------------------------------------------------------------


def valid(result: Accepted, name: str) -> Any:
    return TOPICS[PROVIDERS[name].kind].adapter.validate_python(result.body)


def test_github_issue_opened_becomes_a_ticket() -> None:
    result = accepted("github", **{"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab"})
    assert result.delivery_id == "72d3162e-cc78-11e3-81ab"
    assert result.event_type == "issues.opened"
    ticket = valid(result, "github")
    assert isinstance(ticket, Ticket)
    assert (ticket.id, ticket.subject, ticket.customer_id, ticket.channel) == (
        "Codertocat/Hello-World#1", "Spelling error in the README file", "Codertocat", "github")
    assert ticket.body == "It looks like you accidently spelled 'commit' with two 't's."
    assert result.body["url"] == "https://github.com/Codertocat/Hello-World/issues/1"
    assert result.body["labels"] == ["bug"]


def test_github_issue_without_a_body_uses_its_title() -> None:
    body = orjson.loads(example(EXAMPLES["github"]))
    body["issue"]["body"] = None
    ticket = valid(accepted("github", orjson.dumps(body)), "github")
    assert ticket.body == "Spelling error in the README file"


def test_jira_issue_created_becomes_a_ticket() -> None:
    result = accepted("jira", **{"X-Atlassian-Webhook-Identifier": "jira-42"})
    assert (result.delivery_id, result.event_type) == ("jira-42", "jira:issue_created")
    ticket = valid(result, "jira")
    assert (ticket.id, ticket.subject, ticket.body, ticket.customer_id, ticket.channel) == (
        "JRA-20002", "I feel the need for speed", "Make the issue nav load 10x faster",
        "bryansemail at atlassian dot com", "jira")
    assert result.body["priority"] == "Minor"


def test_jira_cloud_fields_reporter_priority_object_and_adf_description() -> None:
    body = orjson.loads(example(EXAMPLES["jira"]))
    body["issue"]["fields"].update({
        "priority": {"name": "High", "id": "2"},
        "reporter": {"accountId": "5b10ac8d82e05b22cc7d4ef5"},
        "description": {"type": "doc", "version": 1, "content": [
            {"type": "paragraph", "content": [{"type": "text", "text": "Search is slow"}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "since Monday."}]}]},
    })
    result = accepted("jira", orjson.dumps(body))
    assert result.body["customer_id"] == "5b10ac8d82e05b22cc7d4ef5"
    assert result.body["priority"] == "High"
    assert result.body["body"] == "Search is slow\nsince Monday."


def test_jira_without_a_webhook_identifier_is_identified_by_issue_and_timestamp() -> None:
    raw = example(EXAMPLES["jira"])
    headers = {k: v for k, v in signed("jira", SECRET, raw).items()
               if k != "X-Atlassian-Webhook-Identifier"}
    result = interpret("jira", headers, raw)
    assert isinstance(result, Accepted)
    assert result.delivery_id == "99291@1525698237764"


def test_zendesk_ticket_created_event_becomes_a_ticket() -> None:
    result = accepted("zendesk")
    assert result.delivery_id == "2b24ef10-19d4-4740-93cf-8f98ec4776c0"  # the event's id
    ticket = valid(result, "zendesk")
    assert (ticket.id, ticket.subject, ticket.body, ticket.customer_id, ticket.channel) == (
        "zendesk:35436", "Help, my printer is on fire!", "The fire is very colorful.",
        "20978392", "web_form")
    assert result.body["priority"] == "high"


def test_zendesk_trigger_body_becomes_a_ticket_identified_by_its_invocation() -> None:
    raw = example("zendesk_trigger.json")
    result = accepted("zendesk", raw, **{"X-Zendesk-Webhook-Invocation-Id": "8350205582"})
    assert (result.delivery_id, result.event_type) == ("8350205582", "trigger")
    ticket = valid(result, "zendesk")
    assert (ticket.id, ticket.subject, ticket.customer_id) == (
        "zendesk:35436", "Help, my printer is on fire!", "20978392")


def test_zendesk_trigger_body_template_is_valid_json_with_the_fields_mapped() -> None:
    fields = orjson.loads(TRIGGER_BODY)["ticket"]
    assert set(fields) >= {"id", "subject", "description", "requester_id"}


def test_pagerduty_incident_triggered_becomes_an_alert() -> None:
    result = accepted("pagerduty")
    assert result.delivery_id == "5ac64822-4adc-4fda-ade0-410becf0de4f"
    alert = valid(result, "pagerduty")
    assert isinstance(alert, SimpleAlert)
    assert (alert.id, alert.service, alert.severity, alert.summary) == (
        "PGR0VU2", "API Service", "critical", "A little bump in the road")
    assert alert.starts_at == datetime(2020, 4, 9, 15, 16, 27, tzinfo=UTC)
    assert result.body["url"] == "https://acme.pagerduty.com/incidents/PGR0VU2"


def test_grafana_notification_becomes_an_alertmanager_body_with_alertmanagers_identity() -> None:
    result = accepted("grafana")
    webhook = valid(result, "grafana")
    assert isinstance(webhook, AlertmanagerWebhook)
    assert webhook.version == "4" and result.body["grafanaVersion"] == "1"
    lead = lead_alert(webhook)
    assert lead.fingerprint == "c6eadffa33fcdf37"
    assert result.body["alerts"][0]["values"] == {"B": 44.23943737541908, "C": 1}
    same = accepted("grafana")
    assert same.delivery_id == result.delivery_id  # the same notification is the same event
    assert alert_request_id(lead) == alert_request_id(lead_alert(valid(same, "grafana")))


@pytest.mark.parametrize(("name", "change", "event_type"), [
    ("github", {"action": "closed"}, "issues.closed"),
    ("jira", {"webhookEvent": "jira:issue_updated"}, "jira:issue_updated"),
    ("zendesk", {"type": "zen:event-type:ticket.status_changed"},
     "zen:event-type:ticket.status_changed"),
])
def test_other_event_types_are_ignored_and_named(name: str, change: dict[str, Any],
                                                 event_type: str) -> None:
    body = {**orjson.loads(example(EXAMPLES[name])), **change}
    raw = orjson.dumps(body)
    result = interpret(name, signed(name, SECRET, raw), raw)
    assert isinstance(result, Ignored)
    assert result.event_type == event_type and result.reason


def test_github_ping_and_pagerduty_resolved_are_ignored() -> None:
    raw = b'{"zen": "Design for failure.", "hook_id": 1}'
    ping = interpret("github", {**signed("github", SECRET, raw), "X-GitHub-Event": "ping"}, raw)
    assert isinstance(ping, Ignored) and ping.event_type == "ping"
    body = orjson.loads(example(EXAMPLES["pagerduty"]))
    body["event"]["event_type"] = "incident.resolved"
    raw = orjson.dumps(body)
    result = interpret("pagerduty", signed("pagerduty", SECRET, raw), raw)
    assert isinstance(result, Ignored) and result.event_type == "incident.resolved"


@pytest.mark.parametrize(("name", "path", "field"), [
    ("github", ("issue", "title"), "issue.title"),
    ("jira", ("issue", "key"), "issue.key"),
    ("zendesk", ("detail", "id"), "detail.id"),
    ("pagerduty", ("event", "data", "service"), "event.data.service.summary"),
])
def test_a_genuine_delivery_missing_what_the_mapping_needs_names_the_field(
        name: str, path: tuple[str, ...], field: str) -> None:
    body = orjson.loads(example(EXAMPLES[name]))
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    raw = orjson.dumps(body)
    with pytest.raises(BadPayload) as caught:
        interpret(name, signed(name, SECRET, raw), raw)
    assert caught.value.field == field


def test_github_delivery_without_its_delivery_id_is_refused() -> None:
    raw = example(EXAMPLES["github"])
    headers = {k: v for k, v in signed("github", SECRET, raw).items() if k != "X-GitHub-Delivery"}
    with pytest.raises(BadPayload, match="X-GitHub-Delivery"):
        interpret("github", headers, raw)


def test_each_provider_reads_its_own_setting_and_blank_is_unset() -> None:
    env = {"COUNTERPOINT_GITHUB_WEBHOOK_SECRET": "gh", "COUNTERPOINT_JIRA_WEBHOOK_SECRET": "  ",
           "COUNTERPOINT_PAGERDUTY_WEBHOOK_SECRET": "pd"}
    assert configured_secrets(env) == {"github": b"gh", "pagerduty": b"pd"}
    assert all(isinstance(p, Provider) and p.setting.endswith("_WEBHOOK_SECRET")
               for p in PROVIDERS.values())
