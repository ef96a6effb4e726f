"""A single self-contained HTML report: metrics, per-class table, embedded plots, configuration, notes.

The file has no external references (images are base64 data URIs, CSS is inline, no JavaScript), so it
can be mailed or opened from an archive as is. Every string is HTML-escaped: class names and config
values come from users.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.engine.rundir import write_text

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".webp": "image/webp", ".svg": "image/svg+xml"}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       background: #f6f8fa; margin: 0; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff;
       box-shadow: 0 0 0 1px #d0d7de; min-height: 100vh; }
header { border-bottom: 1px solid #d0d7de; margin-bottom: 16px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #eaeef2; }
.generated { color: #656d76; font-size: 0.9em; margin: 0 0 12px; }
table { border-collapse: collapse; font-size: 0.92em; margin: 4px 0 8px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, Menlo, monospace; }
.scroll { overflow-x: auto; max-height: 600px; overflow-y: auto; }
figure { margin: 16px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #656d76; font-size: 0.9em; margin-top: 4px; }
.missing { color: #cf222e; }
details { margin-top: 28px; }
summary { cursor: pointer; font-size: 1.25em; font-weight: 600; }
details table { margin-top: 10px; }
td.value { font-family: ui-monospace, Menlo, monospace; white-space: pre-wrap; word-break: break-word; }
"""


def format_value(value: Any) -> str:
    """Floats to 4 decimals (scientific notation when that would hide them); everything else as str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.4g}"
        return f"{value:.4f}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 0
    return value is None or isinstance(value, (bool, int, float, str, np.generic))


def _numeric_class(value: Any) -> str:
    numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    return ' class="num"' if numeric else ""


def _flatten(config: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, value))
    return items


def _metrics_table(metrics: dict) -> str:
    rows = []
    for key, value in metrics.items():
        if not _is_scalar(value):
            continue  # nested dicts and arrays belong to the per-class table or the plots
        if isinstance(value, np.ndarray):
            value = value.item()
        rows.append(f"<tr><th>{escape(str(key))}</th><td{_numeric_class(value)}>{escape(format_value(value))}</td></tr>")
    if not rows:
        return "<p>No scalar metrics.</p>"
    return "<table><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    columns: list[str] = []
    for stats in per_class.values():
        columns.extend(key for key in stats if key not in columns)
    head = "<tr><th>class</th>" + "".join(f"<th>{escape(str(c))}</th>" for c in columns) + "</tr>"
    rows = []
    for name, stats in per_class.items():
        cells = []
        for column in columns:
            value = stats.get(column, "")
            cells.append(f"<td{_numeric_class(value)}>{escape(format_value(value))}</td>")
        rows.append(f"<tr><th>{escape(str(name))}</th>{''.join(cells)}</tr>")
    return (
        '<div class="scroll"><table>\n<thead>' + head + "</thead>\n<tbody>\n"
        + "\n".join(rows) + "\n</tbody></table></div>"
    )


def _figure(plot: Path) -> str:
    plot = Path(plot)
    caption = escape(plot.stem.replace("_", " ").replace("-", " "))
    if not plot.is_file():
        # A missing plot should not cost the whole report; say so where it would have been.
        return f'<figure><p class="missing">missing plot: {escape(plot.name)}</p></figure>'
    mime = _MIME.get(plot.suffix.lower(), "image/png")
    data = base64.b64encode(plot.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _config_table(config: dict) -> str:
    rows = [
        f'<tr><th>{escape(str(key))}</th><td class="value">{escape(format_value(value))}</td></tr>'
        for key, value in _flatten(config)
    ]
    body = "<table><tbody>\n" + "\n".join(rows) + "\n</tbody></table>" if rows else "<p>Empty.</p>"
    return f"<details><summary>Configuration</summary>\n{body}\n</details>"


def write_report(
    path: Path,
    title: str,
    config: dict,
    metrics: dict,
    plots: list[Path],
    per_class: dict[str, dict[str, float]] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write the report to ``path`` atomically and return it."""
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body><main>",
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="generated">Generated {escape(generated)} by cnnkit</p></header>',
        "<section><h2>Metrics</h2>",
        _metrics_table(metrics),
        "</section>",
    ]
    if per_class:
        parts += ["<section><h2>Per class</h2>", _per_class_table(per_class), "</section>"]
    if plots:
        parts += ["<section><h2>Plots</h2>", *(_figure(plot) for plot in plots), "</section>"]
    if notes:
        items = "\n".join(f"<li>{escape(str(note))}</li>" for note in notes)
        parts += ["<section><h2>Notes</h2>", f"<ul>\n{items}\n</ul>", "</section>"]
    parts += [_config_table(config), "</main></body>", "</html>", ""]
    return write_text(path, "\n".join(parts))
