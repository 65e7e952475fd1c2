"""How a result shows what it cost: per step, which model answered, tokens and USD."""

from __future__ import annotations

from rich.table import Table

from counterpoint.agents.llm.offline import OFFLINE_MODEL
from counterpoint.schemas.events import Result


def usd(amount: float) -> str:
    return f"${amount:.6f}" if amount < 0.01 else f"${amount:.4f}"


def cost_line(result: Result) -> str:
    line = f"{usd(result.usage.cost_usd)} for {result.usage.calls} model calls"
    if result.usage.calls and set(result.models_by_step.values()) <= {OFFLINE_MODEL}:
        line += " (the offline model is free; COUNTERPOINT_PRICES can price it)"
    budget = result.budget
    if budget is not None and budget.limit_usd is not None:
        line += f" — budget {usd(budget.limit_usd)}"
        if budget.ran_out:
            line += f", RAN OUT: {', '.join(budget.ran_out)} skipped the model"
    return line


def steps_table(result: Result) -> Table:
    """One row per step: the model that answered it, its tokens and its cost."""
    table = Table(title="cost per step", title_justify="left", box=None, header_style="bold")
    for column in ("step", "model", "calls", "tokens in/out", "cost"):
        table.add_column(column, justify="right" if column in ("calls", "cost") else "left")
    reused = {f"{f.skill}:{f.focus}" for f in result.findings if f.reused_from is not None}
    for step, usage in result.usage_by_step.items():
        model = result.models_by_step.get(step, "?")
        if step in reused:
            model = "reused, no call"
        table.add_row(step, model, str(usage.calls),
                      f"{usage.input_tokens}/{usage.output_tokens}", usd(usage.cost_usd))
    table.add_row("total", "", str(result.usage.calls),
                  f"{result.usage.input_tokens}/{result.usage.output_tokens}",
                  usd(result.usage.cost_usd), style="bold")
    return table


def history_text(result: Result) -> str:
    return "; ".join(f"{h.request_id[:8]} on {h.completed_at.date().isoformat()} ({h.status})"
                     for h in result.history)
