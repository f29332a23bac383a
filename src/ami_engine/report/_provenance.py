"""Provenance: where the suggestion came from, so that it can be reproduced and audited."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._html import DASH, Markup, fmt_count, fmt_pct, join, missing, num, table, tag
from ._inputs import ReportData
from ._page import Page

# Keys of [meta] shown in their own rows (or elsewhere on the page), not among "other".
_SHOWN = {
    "created", "tool_version", "engine_model", "baseline", "baseline_config_id", "config_id", "seed", "strategy",
    "budget", "loss_weights", "params_on_bound", "baseline_params", "bounds", "data", "split", "metrics",
    "scenarios", "gate", "needless", "strategy_options", "critical_floor", "racing",
}


def provenance_panel(data: ReportData, page: Page) -> Markup:
    if data.meta is None:
        extends = data.config.get("extends")
        note = f" It extends `{extends}`." if isinstance(extends, str) else ""
        return missing("No provenance: this config has no `[meta]` table." + note + " Suggestions written by "
                       "`ami-engine learn` record their data, split, seed, search and versions there.")
    rows = [
        ("created (UTC)", data.at("created")),
        ("tool version", data.at("tool_version")),
        ("engine model", data.at("engine_model")),
        ("extends", data.config.get("extends")),
        ("baseline", _joined(data.at("baseline"), _id(data.at("baseline_config_id")))),
        ("suggestion config id", data.at("config_id")),
        ("data source", _data_source(data.at("data", "source"), data.at("data", "description"))),
        ("data file", data.at("data", "path")),
        ("data SHA-256", data.at("data", "sha256")),
        ("records, streams", _joined(_count(data.at("data", "n_records")), _count(data.at("data", "n_streams")),
                                     sep=", ")),
        ("split", _split(data.table("split"))),
        ("seed", data.at("seed")),
        ("search strategy, budget", _joined(data.at("strategy"), _count(data.at("budget")), sep=", ")),
        ("strategy options", _flat(data.table("strategy_options"))),
        ("critical floor", _flat(data.table("critical_floor"))),
        (_weights_label(data.at("loss_weights")), _weights(data.at("loss_weights"))),
    ]
    rows += [(str(k).replace("_", " "), v) for k, v in data.meta.items()
             if k not in _SHOWN and not isinstance(v, (Mapping, list))]
    shown = [[label, tag("code", str(value)) if label.endswith(("SHA-256", "config id")) else str(value)]
             for label, value in rows if value not in (None, "")]
    body = table(["item", "value"], shown, cls="data provenance")
    racing = data.table("racing")
    if racing:
        body = join([body, _racing(racing)])
    return tag("div", body, cls="card")


def _racing(racing: Mapping[str, Any]) -> Markup:
    """The racing schedule: which rung saw how much data and how many candidates."""
    rungs = racing.get("rungs") if isinstance(racing.get("rungs"), list) else []
    done = racing.get("evaluated") if isinstance(racing.get("evaluated"), list) else []
    rows = []
    for k, r in enumerate(rungs):
        if not isinstance(r, Mapping):
            continue
        rows.append([str(r.get("rung", k)), _count(r.get("shards")) or DASH, _count(r.get("decisions")) or DASH,
                     _count(r.get("candidates")) or DASH, _count(done[k]) if k < len(done) else DASH])
    if num(racing.get("refine_evaluations")):
        at = racing.get("refine_rung")  # older suggestions refined on the top rung
        at = at if isinstance(at, int) and not isinstance(at, bool) and 0 <= at < len(rungs) else len(rungs) - 1
        where = rungs[at] if rungs and isinstance(rungs[at], Mapping) else {}
        rows.append([f"refinement (rung {at})", _count(where.get("shards")) or DASH,
                     _count(where.get("decisions")) or DASH, _count(racing["refine_evaluations"]) or DASH, DASH])
    if racing.get("version") == 2:
        unit = "counts the candidates on rung 0 and the refinement's evaluations"
    else:
        unit = "counts evaluations on all the training data"
    caption = (f"Racing schedule (successive halving, eta {racing.get('eta', DASH)}; the budget "
               f"{racing.get('budget', DASH)} {unit}): every candidate is evaluated on rung 0, the better ones "
               "on the next, larger rung, the best refined on the refinement rung; the top rung is all the "
               "training data. A rung's evaluations include its refinement's.")
    return join([tag("p", caption, cls="caption"),
                 table(["rung", "shards", "decisions", "candidates planned", "evaluated"], rows, cls="data racing")])


def _joined(*parts: Any, sep: str = " ") -> str | None:
    shown = [str(p) for p in parts if p not in (None, "")]
    return sep.join(shown) if shown else None


def _data_source(source: Any, description: Any) -> str | None:
    """The description, led by the kind of source unless it already names it."""
    if isinstance(description, str) and isinstance(source, str) and description.startswith(source):
        return description
    return _joined(source, description, sep=": ")


def _id(config_id: Any) -> str | None:
    return f"(config id {config_id})" if isinstance(config_id, str) else None


def _count(value: Any) -> str | None:
    return fmt_count(value) if num(value) is not None else None


def _flat(table: Mapping[str, Any] | None) -> str | None:
    """`key value, ...` of a table's scalar entries."""
    if not table:
        return None
    return ", ".join(f"{k} {v}" for k, v in table.items() if not isinstance(v, (Mapping, list))) or None


def _weights_label(value: Any) -> str:
    four = isinstance(value, list) and len(value) == 4
    return "loss weights (w1, w2, w3, w4)" if four else "loss weights (w1, w2, w3)"


def _weights(value: Any) -> str | None:
    if not isinstance(value, list):
        return None
    return ", ".join(str(v) for v in value)


def _split(split: Mapping[str, Any] | None) -> str | None:
    if split is None:
        return None
    parts = [str(split.get("method", DASH))]
    if num(split.get("train_fraction")) is not None:
        parts.append(f"{fmt_pct(split['train_fraction'], 0)} train")
    if num(split.get("n_train")) is not None and num(split.get("n_heldout")) is not None:
        parts.append(f"{fmt_count(split['n_train'])} train / {fmt_count(split['n_heldout'])} held-out records")
    if split.get("seed") is not None:
        parts.append(f"seed {split['seed']}")
    return ", ".join(parts)
