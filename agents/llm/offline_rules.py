"""Deterministic answers for the offline provider, one function per task (see offline.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from counterpoint.agents.llm.outputs import (
    GENERAL,
    AlertAssessment,
    Composition,
    Focus,
    InvestigationSummary,
    TicketAssessment,
)
from counterpoint.agents.outcomes import memory_lines
from counterpoint.schemas.events import Fact, Finding, ProposedAction, Subject

# The built-in intents' keyword families; triage passes its configured intents' keywords as
# `intent_words` (agents/triage.py), so an intent of a user's own is spotted by its own words.
INTENT_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "billing": ("invoice", "charge", "charged", "refund", "billing", "payment", "bill",
                "overcharged", "price", "receipt", "subscription"),
    "account": ("log in", "login", "log into", "sign in", "password", "locked", "lockout",
                "account", "2fa", "mfa", "username", "access"),
    "technical": ("error", "crash", "bug", "slow", "timeout", "500", "broken", "outage"),
}
URGENT_WORDS: Final = ("urgent", "asap", "immediately", "outage", "down", "can't work")
PRIORITY_ORDER: Final = ("low", "normal", "high", "urgent")


def _text(subject: Subject) -> str:
    return f" {subject.title} {subject.text} ".lower()


def _has(text: str, phrase: str) -> bool:
    """Whole words only: "down" is not in "download", "500" is not in "1500"."""
    return re.search(rf"(?<!\w){re.escape(phrase.strip())}(?!\w)", text) is not None


def assess_ticket(ctx: Mapping[str, Any]) -> TicketAssessment:
    subject: Subject = ctx["subject"]
    text = _text(subject)
    families: Mapping[str, Sequence[str]] = ctx.get("intent_words") or INTENT_WORDS
    hits = {intent: [w for w in words if _has(text, w)] for intent, words in families.items()}
    # "account" alone is too common ("my account was charged"); it needs a login word as well.
    if hits.get("account") == ["account"]:
        hits["account"] = []
    intents: list[str] = [i for i, words in hits.items() if words] or [GENERAL]
    priority = "normal"
    if any(_has(text, w) for w in URGENT_WORDS):
        priority = "urgent"
    elif "account" in intents and any(_has(text, w) for w in ("locked", "can't log",
                                                                "cannot log")):
        priority = "high"  # a customer locked out cannot help themselves
    found = "; ".join(f"{i}: {', '.join(w.strip() for w in hits.get(i, []))}"
                      for i in intents if hits.get(i))
    return TicketAssessment(
        intents=intents,
        category="+".join(intents),
        priority=priority,
        rationale=f"keyword rules matched {found or 'no specific intent'}",
    )


def assess_alert(ctx: Mapping[str, Any]) -> AlertAssessment:
    subject: Subject = ctx["subject"]
    raw = (subject.severity or "warning").lower()
    severity = "critical" if raw in ("critical", "page", "high", "error") else (
        "info" if raw in ("info", "none", "low") else "warning")
    plans: dict[str, list[Focus]] = {"critical": ["logs", "metrics", "deploys"],
                                     "warning": ["logs", "metrics"], "info": ["metrics"]}
    focuses = plans[severity]
    return AlertAssessment(
        severity=severity,
        category="incident" if severity == "critical" else "degradation",
        focuses=focuses,
        rationale=f"severity label {raw!r}; gathering {', '.join(focuses)}",
    )


ACTION_PATTERNS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "billing": ((r"charged twice|duplicate", "refund the duplicate payment"),),
    "account": ((r"locked", "unlock the account after verifying identity"),
                (r"failed login|password", "send a password reset link")),
    "infrastructure": ((r"deploy", "roll back the most recent deploy"),
                       (r"pool exhausted|connection", "restart the service to drain the pool"),
                       (r"5xx|error", "watch the error rate after mitigation")),
    "knowledge": (),
}


def summarize_investigation(ctx: Mapping[str, Any]) -> InvestigationSummary:
    skill: str = ctx["skill"]
    facts: Sequence[Fact] = ctx["facts"]
    lead = facts[0].text if facts else "nothing relevant was found"
    actions: list[str] = []
    subject: Subject | None = ctx.get("subject")
    blob = " ".join([f.text for f in facts] + [subject.text if subject else ""]).lower()
    for pattern, action in ACTION_PATTERNS.get(skill, ()):
        if re.search(pattern, blob) and action not in actions:
            actions.append(action)
    return InvestigationSummary(summary=lead, recommended_actions=actions)


ACTION_RISK: Final[dict[str, tuple[str, str]]] = {
    # recommended action -> (action verb for ProposedAction, risk)
    "refund the duplicate payment": ("refund", "high"),
    "unlock the account after verifying identity": ("unlock_account", "medium"),
    "send a password reset link": ("send_password_reset", "low"),
    "roll back the most recent deploy": ("rollback_deploy", "high"),
    "restart the service to drain the pool": ("restart_service", "medium"),
}


def _proposed(findings: Sequence[Finding], target: str) -> list[ProposedAction]:
    out: list[ProposedAction] = []
    for finding in findings:
        for rec in finding.recommended_actions:
            if rec in ACTION_RISK:
                verb, risk = ACTION_RISK[rec]
                action = ProposedAction(action=verb, target=target, risk=risk)
                if action not in out:
                    out.append(action)
    return out


def _greeting(customer: Mapping[str, Any] | None) -> tuple[str, str]:
    """Opening line and sign-off: warmer and more committal for long-standing, high tiers."""
    if not customer:
        return "Hello,", "Best regards,\nCounterpoint Support"
    first = str(customer.get("name") or "there").split()[0]
    tier, tenure = customer.get("tier"), customer.get("tenure")
    if tier == "enterprise":
        thanks = f" Thank you for {tenure} with us" if tenure else " Thank you for your loyalty"
        return (f"Dear {first},\n\nWe're sorry for the trouble.{thanks}; your case has "
                "priority handling. Here is what we found.",
                "Kind regards,\nYour Counterpoint account team")
    if tier == "pro":
        return f"Hi {first},\n\nThanks for reaching out; here is what we found.", \
            "Best,\nCounterpoint Support"
    return (f"Hi {first},\n\nWelcome aboard, and thanks for writing in. Here is what we found.",
            "Cheers,\nCounterpoint Support")


def _priority(base: str, customer: Mapping[str, Any] | None) -> str:
    if customer and customer.get("tier") == "enterprise":
        return PRIORITY_ORDER[min(PRIORITY_ORDER.index(base) + 1, 3)]
    return base


def _facts_lines(finding: Finding, limit: int = 3) -> str:
    return "\n".join(f"   - {f.text} [{f.source}]" for f in finding.facts[:limit])


def compose_reply(ctx: Mapping[str, Any]) -> Composition:
    subject: Subject = ctx["subject"]
    findings: Sequence[Finding] = ctx["findings"]
    missing: Sequence[str] = ctx.get("missing", ())
    customer: Mapping[str, Any] | None = ctx.get("customer")
    opening, closing = _greeting(customer)
    proposed = _proposed(findings, subject.customer_id or subject.source_id)
    parts = [opening, ""]
    topical = [f for f in findings if f.skill != "knowledge"] or list(findings)
    for n, finding in enumerate(topical, 1):
        parts.append(f"{n}. {finding.skill.capitalize()}: {finding.summary}")
        actions = [p for p in proposed if p.action in {
            ACTION_RISK[r][0] for r in finding.recommended_actions if r in ACTION_RISK}]
        if actions:
            parts.append("   Next step: " + "; ".join(
                f"we will {_verb(a.action)} (needs approval, not done yet)" if a.risk != "low"
                else f"we will {_verb(a.action)}" for a in actions))
    articles = [f for f in findings if f.skill == "knowledge"]
    if articles and articles[0].facts:
        parts.append(f"\nMore help: {articles[0].facts[0].text}")
    if missing:
        parts.append(f"\nWe are still checking: {', '.join(missing)}. We'll follow up.")
    parts += memory_lines(ctx)
    parts += ["", closing, "", OFFLINE_NOTE_TEXT]
    return Composition(text="\n".join(parts), priority=_priority(ctx.get("priority", "normal"),
                                                                   customer),
                       proposed_actions=proposed)


def compose_runbook(ctx: Mapping[str, Any]) -> Composition:
    subject: Subject = ctx["subject"]
    findings: Sequence[Finding] = ctx["findings"]
    missing: Sequence[str] = ctx.get("missing", ())
    service = subject.service or "the affected service"
    proposed = _proposed(findings, service)
    lines = [f"Runbook: {subject.title}",
             f"Service: {service}   Severity: {subject.severity or 'unknown'}", "",
             "Evidence"]
    for finding in findings:
        lines.append(f" * {finding.skill}/{finding.focus}")
        lines.append(_facts_lines(finding))
    lines += ["", "Recommended actions"]
    if proposed:
        for n, action in enumerate(proposed, 1):
            gate = "requires human approval" if action.risk != "low" else "low risk"
            lines.append(f" {n}. {_verb(action.action)} {action.target} "
                         f"[risk: {action.risk}, {gate}; NOT executed]")
    else:
        lines.append(" (no action is clearly indicated by the evidence)")
    if missing:
        lines += ["", f"Missing evidence (deadline passed): {', '.join(missing)}"]
    lines += memory_lines(ctx)
    lines += ["", OFFLINE_NOTE_TEXT]
    priority = "urgent" if subject.severity == "critical" else "high"
    return Composition(text="\n".join(lines), priority=priority,
                       proposed_actions=proposed)


ACTION_PHRASES: Final[dict[str, str]] = {
    "refund": "refund the duplicate charge",
    "unlock_account": "unlock your account once we have verified your identity",
    "send_password_reset": "send you a password reset link",
    "rollback_deploy": "roll back the latest deploy of",
    "restart_service": "restart",
}


def _verb(action: str) -> str:
    return ACTION_PHRASES.get(action, action.replace("_", " "))


# Kept here (not imported from offline.py) to avoid an import cycle; offline.py re-exports it.
OFFLINE_NOTE_TEXT: Final = (
    "[Drafted by Counterpoint's offline provider: deterministic rules, no language model.]"
)
