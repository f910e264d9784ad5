"""Renderers are plugins: the built-ins and a test module's format go through one hook; every format is
checked on the committed fewshot results (and on hostile labels) for content, escaping and validity."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from mtbench import hookimpl
from mtbench.cli import app
from mtbench.plugins import DEFAULT_PLUGINS, load_plugins
from mtbench.renderers import Renderer, _display

from renderer_fixtures import COMMITTED, HOSTILE, ODD, board_from, write_hostile_results, write_two_datasets

BUILTIN = {"terminal", "markdown", "csv", "json", "latex", "html"}


@pytest.fixture(scope="module")
def board():
    return board_from(COMMITTED)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return board_from(write_hostile_results(tmp_path_factory.mktemp("hostile") / "results"))


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_builtins_are_core_plugins_of_the_same_hook():
    plugins = load_plugins()
    assert BUILTIN <= set(plugins.renderers)
    assert plugins.renderers.providers["latex"] == "plugin 'mtbench.renderers.latex' (mtbench 0.1.0)"
    assert not set(DEFAULT_PLUGINS) & set(plugins.versions())  # versioned with mtbench, not per result
    assert "latex" not in load_plugins(blocked=["mtbench.renderers.latex"]).renderers


class CountsPlugin:
    """A format defined in a test: one line per cell, 'experiment<TAB>protocol<TAB>mean'."""

    @hookimpl
    def register_renderers(self, register):
        register(Renderer("cell-lines", ".txt", lambda lb: "".join(
            f"{c.experiment}\t{c.protocol}\t{c.mean:.4f}\n" for c in lb.cells.itertuples())))


def test_registered_object_renders(board):
    renderer = load_plugins(objects=[("counts", CountsPlugin())]).renderers.get("cell-lines")
    lines = renderer.render(board).splitlines()
    assert len(lines) == len(board.cells)
    assert "protonet\t5w1s\t0.9620" in lines


def test_test_module_renderer_end_to_end_through_the_cli(tmp_path, monkeypatch):
    (tmp_path / "my_format_plugin.py").write_text(textwrap.dedent('''
        from mtbench import hookimpl
        from mtbench.renderers import Renderer

        def render(lb):
            best = lb.cells[lb.cells["best"]]
            return "".join(f"{r.protocol} {r.experiment}\\n" for r in best.itertuples())

        @hookimpl
        def register_renderers(register):
            register(Renderer("winners", ".txt", render))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    result = cli("leaderboard", "-r", str(COMMITTED), "--suite", "fewshot", "--format", "winners",
                 "--plugin", "my_format_plugin")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["5w1s protonet", "5w5s protonet", "20w1s protonet"]
    written = tmp_path / "out" / "w.txt"
    assert cli("leaderboard", "-r", str(COMMITTED), "-f", "winners", "-p", "my_format_plugin", "-o",
               str(written)).exit_code == 0
    assert written.read_text().startswith("5w1s protonet\n")


def test_unknown_format_is_one_line_listing_the_registered_ones(tmp_path):
    result = CliRunner().invoke(app, ["leaderboard", "-r", str(tmp_path), "--format", "docx"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unknown format 'docx'" in lines[0]
    assert all(name in lines[0] for name in BUILTIN)


def test_terminal_fits_100_columns_with_every_label_whole(board, hostile):
    from mtbench.renderers import terminal
    for lb in (board, hostile):
        text = terminal.render(lb)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 100
        for label in set(lb.cells["experiment"]) | set(lb.cells["dataset_label"]):
            assert any(label in line for line in lines), label  # on one line, never cut
        for cell in lb.cells.itertuples():
            assert _display.value_text(lb, pd.Series(cell._asdict())) in text


def test_terminal_console_uses_the_given_width(board):
    from rich.console import Console

    from mtbench.renderers import terminal
    console = Console(file=io.StringIO(), width=100, color_system=None)
    for item in terminal.renderables(board, 100):
        console.print(item)
    assert max(len(line.rstrip()) for line in console.file.getvalue().splitlines()) <= 100
    assert terminal.protocol_chunks(["a", "b", "c", "d", "e", "f", "g"], 47) == [["a", "b", "c"], ["d", "e", "f"],
                                                                                   ["g"]]


def test_two_datasets_keep_their_rows_apart(tmp_path):
    from mtbench.renderers import html_report, markdown, terminal
    lb = board_from(write_two_datasets(tmp_path / "results"))
    assert len(lb.wide) == 26
    text = terminal.render(lb)
    assert "fewshot: accuracy · omniglot\n" in text and "fewshot: accuracy · omniglot-again\n" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    md = markdown.render(lb)
    for dataset in ("omniglot", "omniglot-again"):
        assert md.count(f"| {dataset} | protonet | meta | **96.2 ± 0.4** (600) \\* |") == 1
    assert html_report.render(lb).count("<tr data-search=") == 26


def test_markdown_table_marks_notes_and_escaping(hostile):
    from mtbench.renderers import markdown
    text = markdown.render(hostile)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    n_experiments = len(hostile.wide)
    assert len(table) == 2 * (n_experiments + 1)  # scores and cost tables, each with a header
    cells = [re.split(r"(?<!\\)\|", line) for line in table[: n_experiments + 1]]
    assert len({len(c) for c in cells}) == 1  # an escaped '|' in a label does not split its row
    assert "| omniglot | protonet | meta | **96.2 ± 0.4** (600) \\* |" in text
    assert "| omniglot | &lt;script&gt;alert(1)&lt;/script&gt; | meta | 96.2 ± 0.4 (600) = |" in text
    assert "<script>" not in text
    assert all(f"- {markdown.esc(note)}" in text for note in hostile.notes)
    assert "## Provenance" in text and "- result_files: 21" in text


def test_csv_is_the_cells_frame_every_column(board):
    from mtbench.renderers import csv_file
    back = pd.read_csv(io.StringIO(csv_file.render(board)))
    assert list(back.columns) == list(board.cells.columns) and len(back) == len(board.cells)
    assert back["mean"].round(6).tolist() == board.cells["mean"].round(6).tolist()
    assert json.loads(back.loc[0, "params"]) == board.cells.loc[0, "params"]


def test_json_is_the_cells_frame_with_metadata(board):
    from mtbench.renderers import json_file
    doc = json.loads(json_file.render(board))
    assert doc["metric"] == "accuracy" and doc["higher_is_better"] is True
    assert len(doc["cells"]) == len(board.cells) and set(doc["cells"][0]) == set(board.cells.columns)
    assert doc["friedman"]["average_ranks"]["protonet"] == 1.0
    best = [c for c in doc["cells"] if c["best"]]
    assert {c["experiment"] for c in best} == {"protonet"} and best[0]["p_holm"] is None  # NaN -> null


def test_latex_escapes_everything(hostile):
    from mtbench.renderers import latex
    assert latex.escape(ODD) == (r"odd \%\_\&\#$\$$\^{}$\sim$\{\}$\backslash$$<$$>$$|$'' $\pm$ $\rightarrow$ e ?")
    text = latex.render(hostile)
    assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text
    assert r"\textbf{96.2 $\pm$ 0.4} *" in text  # best bold (and its mark)
    assert r"omniglot & $<$script$>$alert(1)$<$/script$>$ & 96.2 $\pm$ 0.4 = &" in text  # tie marked
    assert latex.escape(ODD) in text and r"99.0 $\pm$ 0.1" in text


def test_latex_compiles_with_pdflatex(hostile, tmp_path):
    from mtbench.renderers import latex
    pdflatex = shutil.which("pdflatex")
    assert pdflatex, "pdflatex is missing: `make test` installs texlive-latex-base and texlive-latex-recommended"
    doc = tmp_path / "board.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   "\\usepackage{booktabs}\n\\begin{document}\n" + latex.render(hostile) + "\\end{document}\n")
    run = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "board.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert (tmp_path / "board.pdf").read_bytes().startswith(b"%PDF-")
    assert "Missing character" not in log and "Undefined control sequence" not in log
