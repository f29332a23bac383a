"""The opening summary: what changed, by how much, and whether it is safe, in plain words."""

from __future__ import annotations

from ._html import ARROW, Markup, fmt_count, fmt_num, fmt_pair, fmt_pct, join, num, relative_change, tag, with_code
from ._inputs import ReportData
from ._page import Page

CHANGE_TOLERANCE = 1e-12


def summary_panel(data: ReportData, page: Page) -> Markup:
    if not data.has_suggestion:
        sentences = ["No suggestion given. Pass `--suggestion suggestion.toml`, the file written by "
                     "`ami-engine learn --out suggestion.toml`, to see what learning suggests."]
    elif data.meta is None:
        sentences = ["This file has no `[meta]` table: it is a plain config, not a learning suggestion, so there "
                     "is no baseline, metric, gate verdict or needless fail-safe to show, only its parameters. "
                     "Pass the file written by `ami-engine learn --out suggestion.toml` for the full report."]
    elif data.at("status") == "no improvement":
        sentences = ["The learning run evaluated its candidates and kept the baseline: there is no suggestion to "
                     "review or apply."]
    else:
        sentences = [
            _what_changed(data),
            _by_how_much(data),
            _is_it_safe(data),
            _critical_floor(data),
            _needless(data),
            "Nothing has been applied: the suggestion takes effect only after a person approves it with "
            "`ami-engine apply`.",
        ]
    items = join(tag("li", with_code(s)) for s in sentences if s)
    head = [tag("p", opening, cls="promise")] if (opening := _opening(data)) else []
    worse = _worse(data)
    return tag("div", join([*head, verdict_badge(data, small=True), tag("ul", items), *worse]), cls="card summary")


def _opening(data: ReportData) -> str | None:
    """The run's outcome in one sentence: the certificate's promise, or why there is none."""
    status = data.at("status")
    if status == "no improvement":
        return ("No improvement found: none of the candidates beats the baseline on the training data, so "
                "there is nothing to suggest.")
    if status == "not gated":
        return "Not gated: this candidate has not been through the safety gate; it is not a suggestion to apply."
    promise = data.at("certificate", "promise")
    if isinstance(promise, str) and promise:
        return promise[0].upper() + promise[1:] + "."
    return None


_FIGURE_NAMES = {"L": "loss L", "fail_safe_rate": "fail-safe rate", "mean_cus": "mean CUS",
                 "clamp_distortion": "clamp distortion", "mean_H": "mean H of final actions"}


def _sig(value: object) -> str:
    v = num(value)
    return "?" if v is None else f"{v:.4g}"


def _worse(data: ReportData) -> list[Markup]:
    """Every figure the suggestion makes worse on some data set, flagged."""
    worse = data.at("worse")
    if not isinstance(worse, list) or not worse:
        return []
    items = [tag("li", f"{_FIGURE_NAMES.get(str(w.get('figure')), str(w.get('figure')))} on "
                       f"{w.get('data')}: {_sig(w.get('baseline'))} {ARROW} {_sig(w.get('suggestion'))}")
             for w in worse if isinstance(w, dict)]
    return [tag("p", "Worse under the suggestion:", cls="worse"), tag("ul", join(items))]


def verdict_badge(data: ReportData, *, small: bool = False) -> Markup:
    """The gate's verdict as a coloured badge, with how many checks pass."""
    verdict = data.verdict
    size = " small" if small else ""
    if verdict is None:
        return tag("div", tag("span", "no gate verdict", cls=f"verdict unknown{size}"), cls="verdict-line")
    failed = [c for c in data.checks if c.get("passed") is False]
    text = (f"{len(data.checks) - len(failed)} of {len(data.checks)} checks pass" if data.checks
            else "no checks recorded")
    return tag("div", join([tag("span", verdict, cls=f"verdict {verdict.lower()}{size}"), tag("p", text)]),
               cls="verdict-line")


def _what_changed(data: ReportData) -> str:
    changed, kept = [], []
    for name, after in data.suggested.items():
        before = data.baseline[name]
        if before is None or after is None:
            continue
        if abs(after - before) > CHANGE_TOLERANCE:
            changed.append(f"`{name}` {fmt_num(before)} {ARROW} {fmt_num(after)}")
        else:
            kept.append(f"`{name}`")
    if not changed and not kept:
        return "The suggestion records no baseline parameters (`[meta.baseline_params]`), so its changes are unknown."
    baseline = data.at("baseline")
    against = f" of the baseline `{baseline}`" if isinstance(baseline, str) else ""
    if not changed:
        return f"The suggestion keeps all {len(kept)} learned parameters at the values{against}."
    text = f"The suggestion changes {len(changed)} of the {len(changed) + len(kept)} learned parameters{against}: "
    text += "; ".join(changed) + "."
    if kept:
        text += f" It keeps {', '.join(kept)}."
    if data.on_bound:
        text += (f" {', '.join(f'`{n}`' for n in data.on_bound)} sit on a bound of their learning range: "
                 "the best value may lie beyond it, where learning may not go.")
    return text


def _by_how_much(data: ReportData) -> str:
    for split, label in (("heldout", "held-out data"), ("train", "training data")):
        before, after = data.metrics(split, "baseline"), data.metrics(split, "suggestion")
        if before is None or after is None or num(before.get("L")) is None or num(after.get("L")) is None:
            continue
        change = relative_change(before.get("L"), after.get("L"))
        rel = f" ({fmt_pct(change)})" if change is not None else ""
        n = num(after.get("n"))
        size = f" ({fmt_count(n)} decisions)" if n is not None else ""
        return (f"On the {label}{size} the loss L goes from {fmt_num(before.get('L'))} to "
                f"{fmt_num(after.get('L'))}{rel}: fail-safe rate "
                f"{fmt_pair(before.get('fail_safe_rate'), after.get('fail_safe_rate'), pct=True)}, mean CUS "
                f"{fmt_pair(before.get('mean_cus'), after.get('mean_cus'))}, clamp distortion "
                f"{fmt_pair(before.get('clamp_distortion'), after.get('clamp_distortion'))}.")
    return "The suggestion records no loss or metrics (`[meta.metrics]`), so the size of the change is unknown."


def _is_it_safe(data: ReportData) -> str:
    if data.verdict is None:
        return "No gate verdict is recorded: run `ami-engine gate suggestion.toml` before relying on it."
    failed = [str(c.get("name", "?")) for c in data.checks if c.get("passed") is False]
    if data.verdict == "ACCEPT":
        return (f"The safety gate accepts it: all {len(data.checks)} checks pass." if not failed
                else f"The safety gate accepts it, although these checks did not pass: {', '.join(failed)}.")
    if failed:
        return (f"The safety gate rejects it: {len(failed)} of {len(data.checks)} checks fail "
                f"({', '.join(f'`{n}`' for n in failed)}). Do not apply it.")
    return "The safety gate rejects it. Do not apply it."


def _critical_floor(data: ReportData) -> str | None:
    before, after = data.scenario("critical", "baseline"), data.scenario("critical", "suggestion")
    if before is None or after is None:
        return None
    return (f"On the `critical` scenario it still fails safe on {fmt_pct(after.get('fail_safe_rate'))} of decisions "
            f"(baseline {fmt_pct(before.get('fail_safe_rate'))}); the mean harm H of its final actions goes "
            f"{fmt_pair(before.get('mean_H'), after.get('mean_H'))}.")


def _needless(data: ReportData) -> str | None:
    count, baseline_l2 = num(data.at("needless", "count")), num(data.at("needless", "baseline_l2"))
    if count is None:
        return None
    share = f" ({fmt_pct(count / baseline_l2)})" if baseline_l2 else ""
    text = (f"Of the baseline's {fmt_count(baseline_l2)} fail-safes on your data, {fmt_count(count)}{share} "
            "are not fail-safes under the suggestion")
    reasons = data.table("needless", "by_reason") or {}
    counted = sorted(((num(v) or 0.0, str(k)) for k, v in reasons.items()), reverse=True)
    if counted and counted[0][0] > 0:
        text += f"; most had the reason `{counted[0][1]}` ({fmt_count(counted[0][0])})"
    return text + "."
