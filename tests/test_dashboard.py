"""The web dashboard in real headless Chromium (Debian's, driven by Playwright) against a
coordinator fed by a short real swarm run: two worker processes, hypotheses submitted by
hand. Screenshots of each page go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, RunningCoordinator, wait_until
from tests.read_helpers import TRAIN, hand_task, serve
from tests.worker_helpers import WorkerFactory, register_task

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = REPO / "artifacts" / "screenshots"
CRASH = "import sys\nSCORE = 0.25  # never reached\nsys.exit('crashed on purpose')\n"
FINAL = {"kept", "discarded", "not-reproduced", "crashed", "conflict"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"needs Debian's chromium at {CHROMIUM}"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip)")


@dataclass
class Swarm:
    served: RunningCoordinator
    task_id: str
    read_token: str
    titles: dict[str, str]

    def submit(self, title: str, train: str) -> str:
        with self.served.client() as http:
            answer = http.post(
                "/api/v1/hypotheses",
                json={
                    "task_id": self.task_id,
                    "title": title,
                    "rationale": f"{title}, by hand",
                    "change": {"train.py": train},
                },
            )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        self.titles[title] = body["experiment_id"]
        return str(body["hypothesis_id"])

    def decided(self, count: int) -> bool:
        hyps = self.served.get(f"tasks/{self.task_id}/hypotheses")
        return sum(1 for h in hyps if h["verdict"] in FINAL) >= count

    def scored(self) -> int:
        """How many experiments ran to a score (the API's own count)."""
        found = self.served.get(
            "experiments", task_id=self.task_id, status="done", result="ok", limit=500
        )
        return len(found["experiments"])


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    root = tmp_path_factory.mktemp("dashboard")
    served = serve(root)
    workers = WorkerFactory(root)
    try:
        task_id = register_task(served, hand_task(root))
        for owner in ("team-a/alice", "bob"):
            token = served.create_token("worker", owner)
            workers.start(served, token, owner.replace("/", "-"))
        run = Swarm(served, task_id, served.create_token("read", "viewer"), {})
        run.submit("lower the score", TRAIN.format(score=0.5))
        wait_until(lambda: run.decided(1), 60, "the first hypothesis to be decided")
        run.submit("raise the score", TRAIN.format(score=2.0))
        run.submit("crash on purpose", CRASH)
        wait_until(lambda: run.decided(3), 60, "three decided hypotheses")
        yield run
    finally:
        workers.stop_all()
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


def open_page(page: Any, swarm: Swarm, path: str) -> None:
    """Open a dashboard address with the read token (in the fragment, never sent) and wait
    until the page has drawn its data."""
    page.goto(f"{swarm.served.base_url}{path}#token={swarm.read_token}")
    page.wait_for_selector("body[data-ready='1']")


def shoot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_the_chart_has_a_dot_per_scored_experiment(page: Any, swarm: Swarm) -> None:
    """Every experiment that ran to a score is one dot; the kept change is one big dot."""
    open_page(page, swarm, f"/tasks/{swarm.task_id}")
    shoot(page, "task")
    assert page.locator("svg.chart circle.pt").count() == swarm.scored()
    assert page.locator("svg.chart circle.pt.kept").count() == 1
    assert "lower the score" in (page.locator("svg.chart text.label").text_content() or "")
    assert page.locator("svg.chart path.best").count() == 1


def test_the_task_page_opens_on_the_chart_with_the_head_beside_it(page: Any, swarm: Swarm) -> None:
    """The first screen: the best-so-far chart, the head card to its right; counts that say
    what they count; the x axis switches to time (kept in the address) and back."""
    open_page(page, swarm, f"/tasks/{swarm.task_id}")
    chart = page.locator("#chart svg.chart").bounding_box()
    card = page.locator("#leaderboard .card").first.bounding_box()
    assert chart["y"] + chart["height"] <= 900  # all of it on the first screen
    assert card["x"] >= chart["x"] + chart["width"] and card["y"] < chart["y"] + chart["height"]
    counts = page.locator("#counts").inner_text()
    assert "1 kept change ·" in counts and "kept runs" not in counts, counts
    before = page.locator("svg.chart circle.pt").count()
    page.click("#x-axis button[data-x=time]")
    assert "Time (when each finished)" in page.locator("svg.chart").inner_html()
    assert page.locator("svg.chart circle.pt").count() == before and "x=time" in page.url
    shoot(page, "task-time-axis")
    page.click("#x-axis button[data-x=experiments]")
    assert "Experiment #" in page.locator("svg.chart").inner_html()


def test_a_filter_narrows_the_table(page: Any, swarm: Swarm) -> None:
    """verdict=kept leaves only kept rows, fewer than before."""
    open_page(page, swarm, f"/tasks/{swarm.task_id}")
    rows = page.locator("#experiments tbody tr")
    before = rows.count()
    page.select_option("#filters select[name=verdict]", "kept")
    wait_until(lambda: rows.count() < before, 10, "the table to narrow")
    assert rows.count() == 2  # the explore and its replicate
    assert page.locator("#experiments tbody .badge.kept").count() == 2
    assert "verdict=kept" in page.url
    shoot(page, "task-filtered")


def test_clicking_an_experiment_shows_its_diff(page: Any, swarm: Swarm) -> None:
    """Clicking the kept explore in the table opens it: diff, rationale, reason."""
    open_page(page, swarm, f"/tasks/{swarm.task_id}")
    page.click(f"#experiments a:text-is('{swarm.titles['lower the score']}')")
    page.wait_for_selector("#diff")
    assert "+SCORE = 0.5" in page.locator("#diff").inner_text()
    assert "lower the score, by hand" in page.locator("#rationale").inner_text()
    assert "kept, replicated by" in page.locator("#reason").inner_text()
    shoot(page, "experiment")


def test_the_lineage_page_shows_the_kept_change_under_the_first_code(
    page: Any, swarm: Swarm
) -> None:
    """Two commits: the task's first code, and the kept change as its child and the head."""
    open_page(page, swarm, f"/tasks/{swarm.task_id}/lineage")
    nodes = page.locator("#lineage li")
    assert nodes.count() == 2
    assert "lower the score" in nodes.nth(1).inner_text() and "head" in nodes.nth(1).inner_text()
    shoot(page, "lineage")


def test_the_contributors_page_publishes_the_formula(page: Any, swarm: Swarm) -> None:
    """Both owners are credited, alice's team is listed, the formula is on the page."""
    open_page(page, swarm, "/contributors")
    table = page.locator("#contributors").inner_text()
    assert "team-a/alice" in table and "bob" in table
    assert "team-a" in page.locator("#teams").inner_text()
    assert "budget_s" in page.locator("#formula").inner_text()
    shoot(page, "contributors")


def test_the_home_page_lists_the_task_with_its_head(page: Any, swarm: Swarm) -> None:
    """The home page links the task and shows its head's score."""
    open_page(page, swarm, "/")
    assert page.locator(f"a[href='/tasks/{swarm.task_id}']").count() == 1
    assert re.search(r"0\.50* ± ", page.locator("main").inner_text())
    shoot(page, "home")


def test_the_task_page_fits_a_phone(browser: Any, swarm: Swarm) -> None:
    """At 390 px wide the page does not scroll sideways (tables scroll inside their box)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    open_page(phone, swarm, f"/tasks/{swarm.task_id}")
    width = phone.evaluate("document.documentElement.scrollWidth")
    shoot(phone, "task-phone")
    context.close()
    assert width <= 390


def test_a_new_result_appears_without_a_reload(page: Any, swarm: Swarm) -> None:
    """A hypothesis judged while the page is open shows up in the table and the chart,
    and the page was never reloaded."""
    open_page(page, swarm, f"/tasks/{swarm.task_id}")
    page.wait_for_selector("#live.on")  # following the event stream
    page.evaluate("window.__sameDocument = 'yes'")
    dots = page.locator("svg.chart circle.pt")
    before = dots.count()
    swarm.submit("a newer idea", TRAIN.format(score=0.75))
    row = page.locator("#experiments tbody tr", has_text="a newer idea")
    row.wait_for(timeout=60_000)
    wait_until(lambda: dots.count() > before, 30, "a new dot on the chart")
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.evaluate("window.__autoswarmEvents") > 0
    shoot(page, "task-live")


# -- after `up` has ended ----------------------------------------------------------------------

QUICK = """\
import random
X = 4.0  # the score is lowest at X = 1
print("---")
print(f"score: {abs(X - 1.0) + random.gauss(0, 0.001):.6f}")
"""


def autoswarm(here: Path, *args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """`autoswarm ARGS` run in `here`, as a researcher types it there."""
    return subprocess.run(
        [sys.executable, "-m", "autoswarm", *args],
        cwd=here,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.mark.slow
def test_after_up_ends_every_read_command_and_the_dashboard_open_its_folder_without_flags(
    tmp_path: Path, task_dir_factory: Callable[..., Path], browser: Any
) -> None:
    """`up` ends; in its folder `status`, `leaderboard`, `experiments`, `show` (by an
    8-character prefix), `export` and `plot` (`--task` a folder, as `up` takes it) answer with
    no flag, and `autoswarm dashboard` serves the results read-only at the URL it prints,
    until Ctrl-C."""
    here = tmp_path / "here"
    here.mkdir()
    task = task_dir_factory("quick", QUICK)
    done = autoswarm(
        here, "up", "--task", str(task), "--workers", "1", "--trust", "trusted-code",
        "--max-experiments", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "autoswarm dashboard" in done.stdout  # it says how to reopen them
    for args in (("status", "--once"), ("leaderboard",), ("experiments",)):
        answer = autoswarm(here, *args)
        assert answer.returncode == 0 and "quick" in answer.stdout, answer.stdout + answer.stderr
    found = json.loads(autoswarm(here, "experiments", "--json").stdout)
    full = found[0]["experiment_id"]
    shown = autoswarm(here, "show", full[:8])
    assert shown.returncode == 0 and full in shown.stdout, shown.stdout + shown.stderr
    exported = autoswarm(here, "export")  # the only task
    assert exported.stdout.startswith("commit\t"), exported.stdout + exported.stderr
    assert autoswarm(here, "plot", "--task", str(task)).returncode == 0  # a folder, as `up`
    assert (here / "progress.png").stat().st_size > 0

    served = subprocess.Popen(
        [sys.executable, "-m", "autoswarm", "dashboard"],
        cwd=here,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert served.stdout is not None
        line = served.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line + served.stderr.read() if served.stderr else line
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(f"{url.group(0)}/")
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("a[href='/tasks/quick']").count() == 1
        shoot(page, "after-up-home")
        context.close()
        # Read-only: nothing can be written through it, whatever the token.
        refused = httpx.post(f"{url.group(0)}/api/v1/hypotheses", json={})
        assert refused.status_code == 405
    finally:
        served.send_signal(signal.SIGINT)
        out, err = served.communicate(timeout=60)
    assert served.returncode == 0, out + err
    assert "Traceback" not in out + err
    assert not (here / ".autoswarm" / "coordinator.json").exists()
