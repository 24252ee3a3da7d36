"""The logview: what a person sees in the browser for a real run, and the JSON API the page reads."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "math_agent"
TINY = "embedded:tiny-random-SmolLM2"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    """Playwright driving Debian's chromium (`.ci/run` installs it); a missing browser fails in CI, skips elsewhere."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = "the playwright package" if sync_playwright is None else CHROMIUM if not Path(CHROMIUM).exists() else None
    if missing:
        message = f"{missing} is not installed: `apt-get install chromium` and `uv sync` (see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright


def _metrics_rows(steps: range) -> list[dict]:
    rows = []
    for step in steps:
        row = {"step": step, "reward/mean": 0.1 + 0.05 * step, "reward/success_rate": 0.04 * step,
               "tokens/response_mean": 60.0 - step, "timing/step_s": 0.5}
        if step % 2 == 0:
            row["val/accuracy"] = 0.02 * step
        rows.append(row)
    return rows


def _append_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def _tool_call_step(sample: dict) -> dict:
    """A sample whose conversation holds a tool call and its result (the tiny random model never writes one)."""
    call = {"id": "call_0", "type": "function",
            "function": {"name": "execute_python_code", "arguments": json.dumps({"code": "print(9 + 4)"})}}
    return {
        **sample, "episode_id": sample["group_id"] + "/0", "reward": 1.0, "is_success": True,
        "reward_components": {"correct": 1.0, "boxed": 1.0}, "termination_reason": "max_turns",
        "messages": [*sample["messages"][:2],
                     {"role": "assistant", "content": "Let me run it.", "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "call_0", "name": "execute_python_code", "content": "stdout: 13"},
                     {"role": "assistant", "content": "The answer is \\boxed{13}."}],
    }


def _read_url(process: subprocess.Popen, timeout_s: float) -> str:
    """The URL a logview command prints (`... http://...`), read from its stdout."""
    found: list[str] = []
    seen: list[str] = []

    def read() -> None:
        for line in process.stdout:
            seen.append(line)
            urls = [word for word in line.split() if word.startswith("http://")]
            if urls:
                found.append(urls[0])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not found:
        process.kill()
        raise AssertionError(f"no URL within {timeout_s} s; stdout:\n{''.join(seen)[-3000:]}\nstderr:\n{process.stderr.read()[-3000:]}")
    return found[0]


@pytest.fixture
def served(monkeypatch) -> list:
    """`serve_logview` (which blocks until Ctrl-C) replaced by `start_logview` (a background thread), so that a test
    can drive the page of a run that `ajet --with-logview` produced. The handles are stopped at the end."""
    import agent_cli.logview
    from agent_cli.logview import start_logview

    servers: list = []

    def serve_in_background(run_dir, host="127.0.0.1", port=0, announce=print):
        servers.append(start_logview(run_dir, host, port))
        announce(servers[-1].url)

    monkeypatch.setattr(agent_cli.logview, "serve_logview", serve_in_background)
    yield servers
    for server in servers:
        server.stop()


def test_a_person_sees_curves_steps_conversation_and_tokens_of_a_debug_run(tmp_path, monkeypatch, served, capsys):
    sync_playwright = _browser_or_skip()
    from agent_cli.ajet import main as ajet

    shutil.copy(EXAMPLE / "math_agent.yaml", tmp_path)
    shutil.copy(EXAMPLE / "workflow.py", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert ajet(["--conf", "math_agent.yaml", "--backbone", "debug", "--with-logview", "--port", "0", f"ajet.model.path={TINY}",
                 "ajet.debug.num_tasks=2", "ajet.rollout.num_repeat=2", "ajet.rollout.max_response_length_in_one_turn=16",
                 "ajet.data.max_response_length=64"]) == 0
    (server,) = served
    assert f"logview: {server.url}" in capsys.readouterr().out
    run_dir = tmp_path / "launcher_record" / "math_agent"
    samples = [json.loads(line) for line in (run_dir / "trajectories" / "step_0.jsonl").read_text().splitlines()]
    _append_jsonl(run_dir / "metrics.jsonl", _metrics_rows(range(1, 6)))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)

        # training curves: one line per metric, one point per logged step
        page.wait_for_selector('path.series[data-key="reward/mean"]')
        assert page.get_attribute('path.series[data-key="reward/mean"]', "data-points") == "5"
        assert page.get_attribute('path.series[data-key="val/accuracy"]', "data-points") == "2"
        assert page.locator('path.series[data-key="tokens/response_mean"]').count() == 1
        assert "Validation accuracy" in page.inner_text("#curves")
        page.select_option("#add-chart", "timing/step_s")  # any other logged metric, on demand
        assert page.get_attribute('path.series[data-key="timing/step_s"]', "data-points") == "5"

        # steps -> groups -> episodes, with rewards, components and termination reasons
        assert page.locator("#steps .step-item").all_inner_texts()[0].startswith("step 0")
        page.wait_for_selector("tr.episode-row")
        assert page.locator("#groups .group").count() == 2
        assert page.locator("tr.episode-row").count() == 4
        groups_text = page.inner_text("#groups")
        assert samples[0]["task_id"] in groups_text and samples[0]["termination_reason"] in groups_text
        assert all(name in groups_text for name in samples[0]["reward_components"])

        # an episode: its conversation, and its tokens coloured by loss mask, with a tooltip on hover
        page.click(f'tr.episode-row[data-episode="{samples[0]["episode_id"]}"]')
        page.wait_for_selector(".response-tokens .tok")
        conversation = page.inner_text(".conversation")
        assert samples[0]["messages"][1]["content"] in conversation  # the task's question
        assert page.locator(".message.assistant").count() == 1
        trained = page.locator(".response-tokens .tok.trained")
        assert trained.count() == sum(samples[0]["loss_mask"])
        shades = {trained.nth(i).evaluate("el => getComputedStyle(el).backgroundColor") for i in range(trained.count())}
        assert len(shades) > 1, "trained tokens are shaded by their logprob"
        trained.nth(0).hover()
        tooltip = page.locator("#tooltip")
        tooltip.wait_for(state="visible")
        first_id, first_logprob = samples[0]["response_ids"][0], samples[0]["logprobs"][0]
        assert f"id {first_id}" in tooltip.inner_text()
        shown = re.search(r"logprob (-?[0-9.]+)", tooltip.inner_text())
        assert shown is not None and abs(float(shown.group(1)) - first_logprob) < 1e-4
        from agent_rl.embedded_model import resolve_model_path
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(TINY))
        shown_text = trained.nth(0).evaluate("el => el.textContent")  # ids decoded by the run's tokenizer
        assert shown_text == (tokenizer.decode([first_id]).replace("\n", "↵\n") or "∅")
        page.screenshot(path=str(tmp_path / "logview_step_0.png"), full_page=True)

        # the run goes on: a new step and more metrics appear on refresh
        _append_jsonl(run_dir / "trajectories" / "step_1.jsonl", [_tool_call_step(samples[0])])
        _append_jsonl(run_dir / "metrics.jsonl", _metrics_rows(range(6, 8)))
        page.click("#refresh")
        page.wait_for_selector('#steps .step-item[data-step="step_1"]')
        page.wait_for_function("document.querySelector('path.series[data-key=\"reward/mean\"]').dataset.points === '7'")
        page.click('#steps .step-item[data-step="step_1"]')
        page.click("tr.episode-row")
        page.wait_for_selector(".tool-call")
        assert "execute_python_code" in page.inner_text(".tool-call")
        assert "print(9 + 4)" in page.inner_text(".tool-call")
        assert "stdout: 13" in page.inner_text(".message.tool")
        assert "max_turns" in page.inner_text(".episode-head")
        assert errors == []
        browser.close()


def test_logview_command_serves_until_ctrl_c(tmp_path):
    run_dir = tmp_path / "launcher_record" / "exp"
    run_dir.mkdir(parents=True)
    _append_jsonl(run_dir / "metrics.jsonl", _metrics_rows(range(1, 3)))
    process = subprocess.Popen([sys.executable, "-m", "agent_cli.main", "logview", str(run_dir), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = _read_url(process, timeout_s=120)
        import urllib.request

        assert [row["step"] for row in json.loads(urllib.request.urlopen(url + "api/metrics", timeout=10).read())] == [1, 2]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, process.stderr.read()[-3000:]


# ---------------------------------------------------------------------------------------------- the JSON API


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory written by hand: two steps, one with two groups, and a metrics file being appended to."""
    from agent_rl.rollout.samples import TrainingSample
    from agent_rl.rollout.trajectories import write_trajectories

    def sample(group: int, repeat: int, reward: float) -> TrainingSample:
        return TrainingSample(
            task_id=f"task-{group}", group_id=f"task-{group}#{group}", episode_id=f"task-{group}#{group}/{repeat}",
            sample_index=0, prompt_ids=[1, 9690, 198], response_ids=[2683, 359, 2, 198], loss_mask=[1, 1, 0, 0],
            logprobs=[-0.25, -2.0, 0.0, 0.0], reward=reward, reward_components={"correct": reward},
            is_success=reward > 0, termination_reason="finished", num_turns=1,
            messages=[{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"}])

    run = tmp_path / "launcher_record" / "exp"
    write_trajectories(run / "trajectories" / "step_1.jsonl", [sample(0, 0, 1.0), sample(0, 1, 0.0), sample(1, 0, 0.0), sample(1, 1, 0.0)])
    write_trajectories(run / "trajectories" / "step_10.jsonl", [sample(0, 0, 1.0)])
    write_trajectories(run / "trajectories" / "step_2.jsonl", [sample(0, 0, 0.5)])
    (run / "config.yaml").write_text(f"ajet:\n  model:\n    path: {TINY}\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.25, "grad/norm": math.nan}) + "\n"
                                       + '{"step": 2, "reward/me')  # a row still being written
    return run


@pytest.fixture
def client(run_dir: Path):
    from agent_cli.logview import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(run_dir)) as test_client:
        yield test_client


def test_steps_are_ordered_by_number_and_summarised(client):
    run = client.get("/api/run").json()
    assert [s["name"] for s in run["steps"]] == ["step_1", "step_2", "step_10"]
    first = run["steps"][0]
    assert (first["num_groups"], first["num_episodes"], first["reward_mean"]) == (2, 4, 0.25)
    assert run["model"] == TINY


def test_a_half_written_metrics_line_is_skipped_and_nan_becomes_null(client, run_dir):
    assert client.get("/api/metrics").json() == [{"step": 1, "reward/mean": 0.25, "grad/norm": None}]
    with open(run_dir / "metrics.jsonl", "a") as out:
        out.write('an": 0.5}\n')
    assert [row["step"] for row in client.get("/api/metrics").json()] == [1, 2]


def test_a_group_with_equal_rewards_is_flagged_zero_variance(client):
    groups = {g["group_id"]: g for g in client.get("/api/step", params={"name": "step_1"}).json()["groups"]}
    assert groups["task-0#0"]["zero_variance"] is False and groups["task-0#0"]["successes"] == 1
    assert groups["task-1#1"]["zero_variance"] is True
    assert [e["episode_id"] for e in groups["task-1#1"]["episodes"]] == ["task-1#1/0", "task-1#1/1"]


def test_episode_tokens_carry_mask_logprob_and_decoded_text(client):
    from agent_rl.embedded_model import resolve_model_path
    from transformers import AutoTokenizer

    episode = client.get("/api/episode", params={"step": "step_1", "episode_id": "task-0#0/0"}).json()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(TINY))
    tokens = episode["samples"][0]["response_tokens"]
    assert [(t["id"], t["mask"], t["logprob"]) for t in tokens] == [(2683, 1, -0.25), (359, 1, -2.0), (2, 0, 0.0), (198, 0, 0.0)]
    assert [t["text"] for t in tokens] == [tokenizer.decode([t["id"]]) for t in tokens]
    assert episode["tokenizer_note"] is None and episode["reward_components"] == {"correct": 1.0}


def test_without_a_model_in_the_config_tokens_are_shown_as_ids(client, run_dir):
    (run_dir / "config.yaml").unlink()
    from agent_cli.logview import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(run_dir)) as fresh:
        episode = fresh.get("/api/episode", params={"step": "step_1", "episode_id": "task-0#0/0"}).json()
    assert all(t["text"] is None for t in episode["samples"][0]["response_tokens"])
    assert "names no model" in episode["tokenizer_note"]


def test_unknown_step_and_episode_are_404_with_the_name(client):
    missing_step = client.get("/api/step", params={"name": "step_99"})
    assert missing_step.status_code == 404 and "step_99" in missing_step.json()["detail"]
    missing_episode = client.get("/api/episode", params={"step": "step_1", "episode_id": "nope"})
    assert missing_episode.status_code == 404 and "nope" in missing_episode.json()["detail"]


def test_start_logview_serves_the_page_on_a_free_port_and_stops(run_dir):
    import urllib.request

    from agent_cli.logview import start_logview

    with start_logview(run_dir, port=0) as server:
        html = urllib.request.urlopen(server.url, timeout=10).read().decode()
        script = urllib.request.urlopen(server.url + "static/logview.js", timeout=10).read().decode()
    assert "<title>agent-rl logview</title>" in html and "/static/logview.js" in html
    assert "function refresh" in script
    with pytest.raises(OSError):  # stopped: nothing listens there any more
        urllib.request.urlopen(server.url, timeout=2)
