"""The two worked examples (examples/), in memory with counterpoint.testing: offline they run
end to end on placeholders; with a scripted model each path of their logic shows."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoint.testing import ScriptedModel, TestPipeline

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SALES = EXAMPLES / "sales_outreach" / "counterpoint.toml"
CONTENT = EXAMPLES / "content_pipeline" / "counterpoint.toml"


@pytest.fixture(autouse=True)
def _fresh_imports() -> Iterator[None]:
    saved = list(sys.path)
    yield
    sys.path[:] = saved
    for name in ("outreach", "content"):
        sys.modules.pop(name, None)


async def test_sales_offline_every_lead_ends_and_says_it_is_a_placeholder() -> None:
    async with TestPipeline(SALES) as pipeline:
        acme = await pipeline.publish("sales.leads", {"id": "L-1", "company": "Acme",
                                                      "employees": 420})
        tiny = await pipeline.publish("sales.leads", {"id": "L-2", "company": "Tiny",
                                                      "employees": 1})
        (a,), (t,) = pipeline.results(acme), pipeline.results(tiny)
        # Placeholders never name the company: QA sends the draft back once, then holds it.
        assert (a.status, a.email.round) == ("held", 2)
        assert "OFFLINE PLACEHOLDER" in a.email.body
        assert len(pipeline.events("sales.rewrites")) == 1
        assert pipeline.deadletters() == []
    assert t.status in ("skipped", "held")  # its score depends on the placeholder's pains


async def test_sales_with_a_model_that_fixes_the_draft_on_rewrite() -> None:
    """The example docs/writing-agents.md shows, as written there."""
    model = ScriptedModel({
        "sales.research": {"summary": "Acme makes anvils", "pains": ["rust", "weight"]},
        "sales.write": [{"subject": "Hi", "body": "Hi there"},
                        {"subject": "Hi", "body": "Hi Acme"}],
        "sales.qa": {"passed": True, "feedback": "name the customer"},
    })
    async with TestPipeline(SALES, model=model) as pipeline:
        rid = await pipeline.publish("sales.leads", {"id": "L-1", "company": "Acme",
                                                     "employees": 420})
        (outreach,) = pipeline.results(rid)
    assert (outreach.status, outreach.score, outreach.email.round) == ("approved", 82, 2)
    assert outreach.email.body == "Hi Acme"
    assert model.tasks() == ["sales.research", "sales.write", "sales.qa", "sales.write",
                             "sales.qa"]


async def test_content_joins_both_reviews_or_publishes_at_the_deadline() -> None:
    async with TestPipeline(CONTENT) as pipeline:
        rid = await pipeline.publish("content.briefs", {"id": "B-1", "topic": "Kafka"})
        (article,) = pipeline.results(rid)
        assert article.brief_id == "B-1" and article.missing == []
        assert set(article.scores) == {"seo", "facts"}
        assert pipeline.agents["editor"].agent.assignor == "range"
