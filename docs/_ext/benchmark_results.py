"""``.. benchmark-results:: NAME``: a result file of ``benchmarks/`` rendered in the docs.

The benchmark scripts write ``benchmarks/results/NAME.md`` (a title, a paragraph naming the
device, versions, date and command, then pipe tables). This directive turns that file into
reStructuredText at build time, so the performance page always shows the committed results and
cannot drift from them: the title becomes a rubric, paragraphs stay paragraphs, inline code stays
code, and each pipe table becomes a table. A missing file is a build error.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _inline(text: str) -> str:
    """Markdown inline code to reStructuredText (bold is written alike in both)."""
    pieces = re.split(r"(`[^`]+`)", text)  # odd pieces are inline code
    for i, piece in enumerate(pieces):
        if i % 2:
            pieces[i] = f"`{piece}`"
        else:
            # Bare command-line options stay literal (smart quotes would make "--quick" a dash).
            pieces[i] = re.sub(r"(?<![\w-])(--[\w-]+)", r"``\1``", piece)
    return "".join(pieces)


def _cells(line: str) -> list[str]:
    # An empty or "-" cell would be read as an empty item or a bullet list.
    return [_inline(cell.strip()) if cell.strip() not in ("", "-") else "\\-"
            for cell in line.strip().strip("|").split("|")]


def markdown_to_rst(markdown: str) -> list[str]:
    """The reStructuredText lines for one result file (see the module docstring)."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i])
                i += 1
            header, rows = _cells(table[0]), [_cells(row) for row in table[2:]]
            out += ["", ".. list-table::", "   :header-rows: 1", ""]
            for row in [header, *rows]:
                out += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
            out.append("")
            continue
        heading = re.match(r"#+ (.*)", line)
        if heading:
            out += ["", f".. rubric:: {_inline(heading.group(1))}", ""]
        else:
            out.append(_inline(line))
        i += 1
    return out


class BenchmarkResults(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        path = RESULTS / f"{self.arguments[0]}.md"
        if not path.is_file():
            raise self.error(f"benchmark-results: no file {path} (run the benchmark that writes it)")
        self.env.note_dependency(str(path))
        container = nodes.container(classes=["benchmark-results"])
        self.state.nested_parse(StringList(markdown_to_rst(path.read_text()), str(path)), self.content_offset, container)
        return [container]


def setup(app):
    app.add_directive("benchmark-results", BenchmarkResults)
    return {"parallel_read_safe": True, "version": "1"}
