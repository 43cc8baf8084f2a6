"""The report as one self-contained HTML page (the `Report.to_html` of the API; JSON and HTML are its two outputs):

Charts are drawn by plotly.js, inlined from the plotly package (``plotly.offline.get_plotlyjs()``: the one library
file, ~4.8 MB, that makes a page work offline and from an e-mail attachment); the page is filled in by a jinja2
template. The figures are built in the browser from the embedded report (exactly `Report.to_dict()`, which is also
what ``--format json`` prints), so clicking a design point redraws its per-layer chart without a server.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from xpusim.files import check_output, write_atomic

if TYPE_CHECKING:
    from xpusim.api.report import Report

HTML_SUFFIXES = (".html", ".htm")


@functools.cache
def _template():  # type: ignore[no-untyped-def]
    import jinja2

    env = jinja2.Environment(autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.StrictUndefined)
    return env.from_string((resources.files("xpusim.api") / "templates" / "report.html.j2").read_text())


@functools.cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _script_json(data: object) -> str:
    """JSON safe inside a <script> element: no ``</script>`` or ``<!--`` can end it early."""
    return json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(report: Report) -> str:
    from markupsafe import Markup

    data = report.to_dict()
    return str(_template().render(
        title=f"xpusim report · {report.model}", meta=data["meta"], assumptions=data["assumptions"],
        metrics=data["metrics"], n_points=len(report.points),
        data_json=Markup(_script_json(data)),
        plotly_js=Markup(_plotly_js().replace("</script", "<\\/script")),
    ))


def write_html(report: Report, path: Path) -> Path:
    """Render and write atomically (nothing half-written); the path is checked first."""
    check_output(path, "--out", HTML_SUFFIXES)
    write_atomic(path, render_html(report))
    return path
