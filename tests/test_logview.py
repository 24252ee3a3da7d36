"""The logview: what a person sees in the browser for a real run, and the JSON API the page reads."""

from __future__ import annotations

import asyncio
import itertools
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


PRODUCT, DIVISION = "What is 1600 * 1490?", "What is 7 // 0?"


def _python_call(code: str, text: str = "") -> str:
    """A completion that calls the python tool, written as the Hermes chat template renders a tool call."""
    return text + "<tool_call>\n" + json.dumps({"name": "execute_python_code", "arguments": {"code": code}}) + "\n</tool_call>"


TOOL_SCRIPTS = {
    PRODUCT: [_python_call("print(1600 * 1490)"), "The python tool printed 2384000, so the answer is \\boxed{2384000}."],
    DIVISION: [_python_call("x = 7\nprint(x // 0)", "I will run it.\n"),
               'Again.\n<tool_call>{"name": "execute_python_code", "arguments": {"code": "print(1}</tool_call>',
               "It cannot be computed: \\boxed{0}."],
}
"""Each task's completions, turn by turn: a tool call that runs, then the answer; a tool call that fails, one that does
not parse, then an answer after the agent's "maximum iterations" message."""


class _ScriptedTurns:
    """An inference engine that writes each task's turns from `TOOL_SCRIPTS`: it finds the task's question in the prompt
    and answers with that task's next completion (tokenized, then the end-of-turn token)."""

    max_model_len = 8192

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.turns = {question: iter(texts) for question, texts in TOOL_SCRIPTS.items()}

    async def generate(self, prompt_ids, params):
        from agent_rl.engines.base import Completion

        prompt = self.tokenizer.decode(prompt_ids)
        (question,) = [q for q in self.turns if q in prompt]
        text = next(self.turns[question])
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return [Completion(ids, [-0.5] * len(ids), "stop", text)]


def _play_tool_episodes() -> list:
    """Two episodes of the math agent env (sandboxed python tool, judge, chat template) played by the real collector
    with `_ScriptedTurns`: the samples training writes to `trajectories/step_N.jsonl`, without a model."""
    import agent_env
    from agent_env import Task
    from agent_rl.embedded_model import resolve_model_path
    from agent_rl.engines.base import SamplingParams
    from agent_rl.rollout.collector import RolloutCollector
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(TINY))
    tasks = [Task(main_query=PRODUCT, task_id="calc-product", metadata={"answer": "2384000"}),
             Task(main_query=DIVISION, task_id="calc-division", metadata={"answer": "undefined"})]
    collector = RolloutCollector(lambda: agent_env.make("agent_env/MathAgent-v0"), _ScriptedTurns(tokenizer), tokenizer,
                                 SamplingParams())
    batch = asyncio.run(collector.collect(tasks, num_repeat=1))
    assert [e.error for e in batch.episodes] == [None, None]
    return batch.samples


TOOL_EPISODES = Path(__file__).with_name("logview_tool_episodes.jsonl")
"""`_play_tool_episodes()` as written to a trajectory file (playing them takes ~15 s of imports; regenerate with
`uv run python tests/test_logview.py`)."""


@pytest.fixture
def tool_run(tmp_path: Path) -> Path:
    """A run directory whose step 0 holds the two tool episodes of `TOOL_EPISODES`."""
    run = tmp_path / "launcher_record" / "tool_use"
    (run / "trajectories").mkdir(parents=True)
    shutil.copy(TOOL_EPISODES, run / "trajectories" / "step_0.jsonl")
    (run / "config.yaml").write_text(f"ajet:\n  model:\n    path: {TINY}\n")
    return run


def _turn_token_counts(samples: list[dict]) -> list[tuple[int, int]]:
    """(trained, inserted) tokens per turn, read off the loss masks: each run of 1s, then the 0s after it."""
    counts: list[list[int]] = []
    for sample in samples:
        for trained, run in itertools.groupby(sample["loss_mask"]):
            if trained:
                counts.append([len(list(run)), 0])
            else:
                counts[-1][1] += len(list(run))
    return [tuple(c) for c in counts]


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
        assert "stdout: 13" in page.inner_text(".tool-call .tool-result")
        assert "max_turns" in page.inner_text(".episode-summary")
        assert errors == []
        browser.close()


def test_a_person_reads_a_tool_episode_turn_by_turn(tool_run, tmp_path):
    sync_playwright = _browser_or_skip()
    from agent_cli.logview import start_logview

    samples = [json.loads(line) for line in (tool_run / "trajectories" / "step_0.jsonl").read_text().splitlines()]
    product = [s for s in samples if s["task_id"] == "calc-product"]
    division = [s for s in samples if s["task_id"] == "calc-division"]
    product_row, division_row = (f'tr.episode-row[data-episode="{episode[0]["episode_id"]}"]' for episode in (product, division))
    with start_logview(tool_run) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)

        # a tool call that ran: its code as code, its stdout under it, and the turns' trained/inserted tokens
        page.click(product_row)
        page.wait_for_selector(".turn[data-turn]")
        assert page.locator(f"{product_row} td").nth(6).inner_text() == "1/1"  # tool calls that ran / all
        assert page.inner_text(".episode-summary") == "2 turns · 1 tool call · 1 ran (return code 0) · reward 1 · finished"
        assert page.locator(".turn[data-turn]").count() == 2
        assert [page.inner_text(f'.turn[data-turn="{n}"] .turn-title') for n in (1, 2)] == ["Turn 1", "Turn 2"]
        code = page.locator('.turn[data-turn="1"] .tool-call pre.code')
        assert code.inner_text() == "print(1600 * 1490)"
        assert "mono" in code.evaluate("el => getComputedStyle(el).fontFamily").lower()
        assert "execute_python_code" in page.inner_text('.turn[data-turn="1"] .tool-call .name')
        result = page.locator('.turn[data-turn="1"] .tool-call .tool-result')
        assert result.get_attribute("class") == "tool-result ok"
        assert result.locator(".returncode").inner_text() == "0"
        assert result.locator("pre.stdout").inner_text().strip() == "2384000"
        assert result.locator("pre.stderr").count() == 0
        assert "2384000" in page.inner_text('.turn[data-turn="2"] .message.assistant')
        shown = [page.inner_text(f'.turn[data-turn="{n}"] .turn-tokens') for n in (1, 2)]
        assert shown == [f"{t} trained · {i} inserted tokens" for t, i in _turn_token_counts(product)]
        assert page.locator(".response-tokens .turn-mark").all_inner_texts() == ["turn 1", "turn 2"]
        assert page.locator(".response-tokens .tok.trained").count() == sum(product[0]["loss_mask"])

        # a failing run (return code 1, stderr) and a call that did not parse are marked as errors
        page.click(division_row)
        page.wait_for_selector('.turn[data-turn="3"]')
        assert page.inner_text(".episode-summary") == (
            "3 turns · 2 tool calls · 0 ran (return code 0) · 1 failed · 1 parse error · reward 0 · finished")
        assert page.inner_text('.turn[data-turn="1"] .tool-call pre.code') == "x = 7\nprint(x // 0)"  # line breaks kept
        failed = page.locator('.turn[data-turn="1"] .tool-call .tool-result')
        assert failed.get_attribute("class") == "tool-result error"
        assert failed.locator(".returncode").inner_text() == "1"
        assert "ZeroDivisionError" in failed.locator(".output.error pre.stderr").inner_text()
        assert failed.locator("pre.stderr").evaluate("el => getComputedStyle(el).color") == "rgb(194, 59, 59)"
        unparsed = page.locator('.turn[data-turn="2"] .tool-call .tool-result')
        assert unparsed.get_attribute("class") == "tool-result parse_error"
        assert "parse error" in unparsed.inner_text() and "ToolCallParseError" in unparsed.inner_text()
        assert "maximum iterations" in page.inner_text('.turn[data-turn="2"] .message.user')  # the agent's own message
        shown = [page.inner_text(f'.turn[data-turn="{n}"] .turn-tokens') for n in (1, 2, 3)]
        assert shown == [f"{t} trained · {i} inserted tokens" for t, i in _turn_token_counts(division)]
        assert len(division) == 2  # the agent's message rewrote its history: turn 3 starts a new sample
        new_sample = f"sample 1 starts here (its prompt: {len(division[1]['prompt_ids'])} tokens"
        assert new_sample in page.inner_text('.turn[data-turn="3"] .turn-head')
        assert page.locator(".response-tokens .turn-mark").all_inner_texts() == ["turn 1", "turn 2", "turn 3"]
        page.screenshot(path=str(tmp_path / "logview_tool_episode.png"), full_page=True)
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


def test_a_real_tool_episode_pairs_every_turn_with_its_tokens_and_every_call_with_its_result(tool_run):
    from agent_cli.logview import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(tool_run)) as client:
        step = client.get("/api/step", params={"name": "step_0"}).json()
        episodes = {e["task_id"]: e for g in step["groups"] for e in g["episodes"]}
        product, division = (client.get("/api/episode", params={"step": "step_0", "episode_id": episodes[task]["episode_id"]}).json()
                             for task in ("calc-product", "calc-division"))
    assert episodes["calc-product"]["tools"] == {"calls": 1, "ran": 1, "failed": 0, "parse_errors": 0, "unanswered": 0}
    assert episodes["calc-division"]["tools"] == {"calls": 2, "ran": 0, "failed": 1, "parse_errors": 1, "unanswered": 0}
    # the final conversation holds the last assistant message and every tool result: turns pair up one to one
    for episode in (product, division):
        assert episode["turns_note"] is None and len(episode["turns"]) == episode["num_turns"]
        assert [m["role"] for m in episode["prompt_messages"]] == ["system", "user"]
        assert all(t["assistant"]["role"] == "assistant" for t in episode["turns"])
    (call,) = product["turns"][0]["tool_calls"]
    assert (call["name"], call["code"], call["arguments"]) == ("execute_python_code", "print(1600 * 1490)", {})
    assert {k: call["result"][k] for k in ("status", "returncode", "stdout", "stderr")} == {
        "status": "ok", "returncode": 0, "stdout": "2384000\n", "stderr": ""}
    assert division["turns"][1]["tool_calls"][0]["result"]["status"] == "parse_error"
    assert [t["tokens"]["sample_index"] for t in division["turns"]] == [0, 0, 1]
    turns_of_tokens = [[t["turn"] for t in s["response_tokens"]] for s in division["samples"]]
    assert [sorted(set(turns)) for turns in turns_of_tokens] == [[1, 2], [3]]


def test_a_tool_call_without_a_result_is_unanswered_and_results_pair_by_call_id():
    from agent_cli.logview.turns import conversation_turns, tool_counts

    def call(call_id: str, name: str, arguments: str) -> dict:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    messages = [
        {"role": "user", "content": "Look it up, then compute."},
        {"role": "assistant", "content": "",
         "tool_calls": [call("a", "search", '{"query": "x"}'), call("b", "execute_python_code", '{"code": "1/0"}')]},
        {"role": "tool", "tool_call_id": "b", "content": "<returncode>-1</returncode><stdout></stdout><stderr>TimeoutError</stderr>"},
        {"role": "tool", "tool_call_id": "a", "content": "FunctionNotFoundError: no tool named search"},
        {"role": "assistant", "content": "Once more.",
         "tool_calls": [call("c", "execute_python_code", '{"code": "print(2)", "timeout": 5}')]},
    ]
    prompt, turns = conversation_turns(messages)
    assert prompt == messages[:1] and len(turns) == 2
    search, python = turns[0]["tool_calls"]
    assert (search["code"], search["arguments"], search["result"]["status"]) == (None, {"query": "x"}, "error")
    assert (python["result"]["status"], python["result"]["returncode"]) == ("error", -1)
    (last,) = turns[1]["tool_calls"]
    assert (last["code"], last["arguments"], last["result"]) == ("print(2)", {"timeout": 5}, None)
    assert tool_counts(turns) == {"calls": 3, "ran": 0, "failed": 2, "parse_errors": 0, "unanswered": 1}


if __name__ == "__main__":
    from agent_rl.rollout.trajectories import write_trajectories

    print(write_trajectories(TOOL_EPISODES, _play_tool_episodes()))
