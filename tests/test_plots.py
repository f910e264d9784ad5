"""Plots: valid PNG/SVG/PDF files holding the expected series, the Pareto front and CD cliques computed
right (both metric directions), and `mtbench plot` checking its arguments before any work."""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtbench import plots
from mtbench.cli import app
from mtbench.errors import MtbenchError

from renderer_fixtures import COMMITTED, REGRESSION, board_from

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def board():
    return board_from(COMMITTED)


@pytest.fixture(scope="module")
def regression():
    return board_from(REGRESSION, "regression")


def svg_ids(path: Path, prefix: str) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    return [g.get("id") for g in root.iter(f"{SVG}g") if g.get("id") and g.get("id").startswith(prefix)]


def test_pareto_front_both_directions():
    seconds, acc = [10, 20, 30, 40, 5], [0.5, 0.7, 0.6, 0.9, 0.4]
    assert plots.pareto_front(seconds, acc, higher_is_better=True) == [4, 0, 1, 3]
    assert plots.pareto_front(seconds, acc, higher_is_better=False) == [4]  # cheapest is also lowest
    assert plots.pareto_front([1, 1, 2], [0.3, 0.5, 0.4], True) == [1]  # a tie in cost keeps the better one


def test_cd_cliques_are_maximal_runs_under_the_critical_difference():
    assert plots.cd_cliques([1.0, 1.5, 2.8, 3.0], 1.0) == [(0, 1), (2, 3)]
    assert plots.cd_cliques([1.0, 1.5, 2.8, 3.0], 2.0) == [(0, 2), (1, 3)]
    assert plots.cd_cliques([1.0, 2.0, 3.0], 0.5) == []


def test_shots_png_has_one_line_per_experiment_and_panel(board, tmp_path):
    fig = plots.figure(board, "shots")
    five, twenty = fig.axes[0], fig.axes[1]
    cells = board.cells
    assert len([ln for ln in five.get_lines() if (ln.get_gid() or "").startswith("series-shots-5w-")]) == \
        cells[cells["n_way"] == 5]["experiment"].nunique() == 13
    protonet = next(c for c in five.containers if c.get_label() == "protonet").lines[0]
    assert list(protonet.get_xdata()) == [1, 5] and protonet.get_ydata()[1] == pytest.approx(99.0, abs=0.05)
    assert len([ln for ln in twenty.get_lines() if (ln.get_gid() or "").startswith("series-")]) == 3
    path = tmp_path / "shots.png"
    plots.save(fig, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 1000 and height > 300


def test_cost_svg_has_points_and_the_pareto_front(board, tmp_path):
    path = tmp_path / "cost.svg"
    plots.save(plots.figure(board, "cost"), path, salt="cost")
    ids = svg_ids(path, "")
    assert len([i for i in ids if i.startswith("pareto-front-")]) == 3 and len(set(ids)) == len(ids)
    assert len([i for i in ids if i.startswith("series-cost-")]) == len(board.cells)  # one point per cell
    front = next(ln for ln in plots.figure(board, "cost").axes[0].get_lines() if ln.get_gid() == "pareto-front-0")
    assert list(front.get_xdata()) == [pytest.approx(86.915, abs=0.01)]  # protonet: cheapest and best at 5w1s


def test_cost_front_follows_a_lower_is_better_metric(regression):
    front = next(ln for ln in plots.figure(regression, "cost").axes[0].get_lines() if ln.get_gid() == "pareto-front-0")
    k5 = regression.cells[regression.cells["protocol"] == "1w5s"]
    expected = [k5["train_s"].min(), k5.loc[k5["mean"].idxmin(), "train_s"]]  # finetune (fast), maml-l2sp (best)
    assert list(front.get_xdata()) == pytest.approx(sorted(expected))
    assert front.get_ydata()[-1] == pytest.approx(k5["mean"].min())


def test_curves_pdf_and_series_per_experiment(board, regression, tmp_path):
    fig = plots.figure(board, "curves")
    first = [ln for ln in fig.axes[0].get_lines() if (ln.get_gid() or "").startswith("series-curve-")]
    assert len(first) == board.curves[board.curves["protocol"] == "5w1s"]["experiment"].nunique() == 13
    maml = next(ln for ln in first if ln.get_label() == "maml")
    assert max(maml.get_xdata()) == 3000 and max(maml.get_ydata()) > 90
    path = tmp_path / "curves.pdf"
    plots.save(fig, path)
    data = path.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    reg = plots.figure(regression, "curves")  # validation MSE, not accuracy
    assert "mse" in reg.axes[0].get_ylabel()


def test_cd_diagram_from_friedman_ranks(board, regression, tmp_path):
    path = tmp_path / "cd.svg"
    plots.save(plots.figure(regression, "cd"), path, salt="cd")
    ids = svg_ids(path, "cd-")
    assert len([i for i in ids if i.startswith("cd-experiment-")]) == len(regression.friedman["average_ranks"]) == 9
    bar = next(ln for ln in plots.figure(regression, "cd").axes[0].get_lines() if ln.get_gid() == "cd-bar")
    assert bar.get_xdata()[1] - bar.get_xdata()[0] == pytest.approx(regression.friedman["cd"])
    assert "cd-clique-0" in svg_ids(tmp_path / "cd.svg", "cd-clique")
    no_friedman = type(board)(**{**board.__dict__, "friedman": None})
    with pytest.raises(MtbenchError, match="critical-difference diagram needs"):
        plots.figure(no_friedman, "cd")


def test_svg_markup_is_inline_ready_and_stable(board):
    first = plots.svg_markup(plots.figure(board, "cd"), "cd")
    assert first.startswith("<svg") and "<?xml" not in first
    assert first == plots.svg_markup(plots.figure(board, "cd"), "cd")  # no dates, fixed ids


def test_plot_command(tmp_path):
    def run(*args):
        return CliRunner().invoke(app, ["plot", "-r", str(COMMITTED), "--suite", "fewshot", *args])
    out = tmp_path / "figs" / "cd.png"
    result = run("--kind", "cd", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run("--kind", "violin", "-o", str(tmp_path / "v.png"))
    assert bad.exit_code == 2 and "unknown plot kind 'violin'" in bad.output
    bad = run("--kind", "shots", "-o", str(tmp_path / "v.gif"))
    assert bad.exit_code == 2 and "must end in .png, .svg or .pdf" in bad.output
    empty = CliRunner().invoke(app, ["plot", "-r", str(tmp_path / "none"), "-o", str(tmp_path / "x.svg")])
    assert empty.exit_code == 1 and "no results" in empty.output
    assert not (tmp_path / "x.svg").exists() and not (tmp_path / "v.png").exists()
