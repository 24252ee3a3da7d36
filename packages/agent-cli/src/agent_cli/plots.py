"""PNG plots of a run's `metrics.jsonl`: reward, validation accuracy and lengths, written next to the results."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PLOTS", "write_plots"]

PLOTS: dict[str, tuple[str, Sequence[str], str]] = {
    "reward": ("Reward", ("reward/mean", "reward/success_rate"), "reward"),
    "val_accuracy": ("Validation accuracy", ("val/accuracy", "val/pass@*"), "accuracy"),
    "lengths": ("Response length", ("tokens/response_mean", "tokens/prompt_mean"), "tokens per sample"),
}
"""File stem -> (title, metric keys, y label). A key ending in `*` matches every key with that prefix."""


def write_plots(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw `PLOTS` from `run_dir/metrics.jsonl` into `out_dir` (default `run_dir/plots/`) as `<stem>.png`.

    A plot none of whose keys was ever logged is skipped (e.g. no validation ran); no `metrics.jsonl` (or
    an empty one) writes nothing. Returns the paths written. Uses matplotlib's Agg canvas directly, so it
    works without a display and leaves pyplot's global state alone.
    """
    rows = _read_metrics(Path(run_dir) / "metrics.jsonl")
    if not rows:
        return []
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    written = []
    for stem, (title, patterns, ylabel) in PLOTS.items():
        series = {key: _series(rows, key) for key in _matching_keys(rows, patterns)}
        series = {key: points for key, points in series.items() if points}
        if not series:
            continue
        figure = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for key, points in series.items():
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, marker="o" if len(points) <= 40 else None, markersize=3, linewidth=1.5, label=key)
        axes.set(title=f"{title} · {Path(run_dir).name}", xlabel="step", ylabel=ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"{stem}.png"
        tmp = path.with_name(f".{path.name}.tmp")
        figure.savefig(tmp, format="png")
        tmp.replace(path)
        written.append(path)
    return written


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # an incomplete last line of a run in progress
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _matching_keys(rows: list[dict[str, Any]], patterns: Sequence[str]) -> list[str]:
    keys: dict[str, None] = {}
    for pattern in patterns:
        for row in rows:
            for key in row:
                if key == pattern or (pattern.endswith("*") and key.startswith(pattern[:-1])):
                    keys.setdefault(key, None)
    return list(keys)


def _series(rows: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    points = []
    for index, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            step = row.get("step", index)
            points.append((float(step if isinstance(step, int | float) else index), float(value)))
    return points
