"""Progress for long runs: a suite bar above the task bars in a terminal, heartbeat lines when piped."""
from __future__ import annotations

import io
import time

from rich.console import Console

from mtbench.progress import HEARTBEAT_S, Reporter, eta, format_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def piped() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_heartbeat_line_names_cell_task_step_loss_and_etas():
    console, _ = piped()
    clock = FakeClock()
    reporter = Reporter(console=console, heartbeat_s=0, clock=clock)
    with reporter, reporter.suite(4) as suite:
        suite.next_cell("maml__omniglot__5w1s")
        clock.now += 100  # first cell: 100 s
        suite.next_cell("anil__omniglot__5w1s")
        with reporter.task("fit maml", 1000) as advance:
            clock.now += 30
            advance(250, status="loss 1.234")
            line = reporter.heartbeat_line()
    assert line == ("cell 2/4 anil__omniglot__5w1s | fit maml: step 250/1000, loss 1.234, ETA 1:30 | "
                    "suite ETA 5:00")  # task: 30 s per 250 steps; suite: 100 s per cell, 3 cells left


def test_piped_run_prints_a_heartbeat_while_a_step_is_silent():
    """defect 12: with stdout not a terminal, a long fit is not silent until it ends."""
    console, buf = piped()
    with Reporter(console=console, heartbeat_s=0.05) as reporter, reporter.suite(2) as suite:
        suite.next_cell("cell-a")
        with reporter.task("fit", 10) as advance:
            advance(3, status="loss 0.500")
            time.sleep(0.4)  # one very long step: only the background heartbeat can speak now
            beats = buf.getvalue().count("heartbeat:")
            advance(7)
        suite.next_cell("cell-b")
    text = buf.getvalue()
    assert beats >= 2
    assert "heartbeat: cell 1/2 cell-a | fit: step 3/10, loss 0.500, ETA" in text
    assert "cell 1/2: cell-a (suite ETA ?)" in text and "cell 2/2: cell-b (suite ETA 0:00)" in text
    assert "fit: 10 of 10 steps" in text


def test_no_heartbeat_when_quiet_and_default_interval():
    console, buf = piped()
    with Reporter(enabled=False, console=console, heartbeat_s=0.01) as reporter, reporter.suite(1) as suite:
        suite.next_cell("x")
        with reporter.task("fit", 2) as advance:
            advance()
            time.sleep(0.05)
    assert buf.getvalue() == ""
    assert Reporter().heartbeat_s == HEARTBEAT_S == 30.0


def test_terminal_shows_a_suite_bar_above_the_task_bars():
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with Reporter(console=console) as reporter, reporter.suite(3) as suite:
        suite.next_cell("first")
        suite.next_cell("second")
        with reporter.task("fit", 5) as advance:
            advance(2, status="loss 1.0")
            tasks = reporter._progress.tasks
            assert tasks[0].description == "cell 2/3 second" and tasks[0].completed == 1 and tasks[0].total == 3
            assert tasks[1].description == "fit" and tasks[1].completed == 2


def test_time_helpers():
    assert format_seconds(3723) == "1:02:03" and format_seconds(65) == "1:05" and format_seconds(None) == "?"
    assert eta(10.0, 1, 4) == 30.0 and eta(10.0, 0, 4) is None


def test_the_training_loop_reports_its_loss_to_the_heartbeat():
    import torch

    from mtbench.train import fit_loop

    console, buf = piped()
    reporter = Reporter(console=console, heartbeat_s=0)
    weight = torch.nn.Parameter(torch.tensor([3.0]))
    lines = []

    class Ctx:  # the loop only asks its context for a progress bar
        def progress(self, description, total):
            return reporter.task(description, total)

    def loss(_batch):
        lines.append(reporter.heartbeat_line())
        return (weight ** 2).sum()

    with reporter, reporter.suite(1) as suite:
        suite.next_cell("quadratic")
        fit_loop(loss, iter(lambda: None, 1), [weight], steps=5, ctx=Ctx(), lr=0.1, description="fit quadratic")
    assert lines[0] == "cell 1/1 quadratic | fit quadratic: step 0/5, ETA ? | suite ETA ?"
    assert lines[-1].startswith("cell 1/1 quadratic | fit quadratic: step 4/5, loss ")
