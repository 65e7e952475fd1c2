"""What a finding says when its investigation read nothing: why, in the request's own terms."""

from __future__ import annotations

from counterpoint.schemas.events import Fact, Subject


def nothing_checked(skill: str, subject: Subject, focus: str) -> Fact:
    """What the request lacked (a customer, a service), else that no tool returned anything."""
    if skill in ("billing", "account") and not subject.customer_id:
        return Fact(text=f"The request names no customer, so no {skill} records were checked.",
                    source="request")
    if skill == "infrastructure" and not (subject.service or subject.labels.get("service")):
        return Fact(text=f"The request names no service, so no {focus} were checked.",
                    source="request")
    return Fact(text=f"The {skill} investigation read no business records.", source="tools")
