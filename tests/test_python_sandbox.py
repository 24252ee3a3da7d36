"""The sandboxed `execute_python_code`: agentscope's tool contract, and model-written attacks that must stay contained."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from agent_env.tools import (
    PythonSandbox,
    SandboxConfig,
    SandboxStatus,
    SandboxUnavailableError,
    check_isolation,
    make_execute_python_code,
    sandbox_status,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
NOT_ISOLATED = SandboxStatus(isolated=False, problems=("no namespaces in this test",))
RESULT_TEXT = re.compile(
    r"^<returncode>(-?\d+)</returncode><stdout>(.*)</stdout><stderr>(.*)</stderr>$", re.S
)


@pytest.fixture(scope="module")
def isolated() -> SandboxStatus:
    status = sandbox_status()
    if not status.isolated:
        pytest.skip(f"no isolation on this machine: {status.describe()}")
    return status


@pytest.fixture(scope="module")
def sandbox(isolated: SandboxStatus):
    box = PythonSandbox(SandboxConfig(timeout_s=10))
    yield box
    box.close()


def limited(**limits) -> PythonSandbox:
    """A cold sandbox with small limits, for one attack."""
    return PythonSandbox(SandboxConfig(backend="cold", **limits))


def marker() -> str:
    """A `sleep` argument no other process on the machine has: its processes can be found in /proc."""
    return f"{1_000_000 + secrets.randbelow(8_000_000)}.{os.getpid()}"


def processes_running(argument: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argument.encode() in cmdline:
                found.append(int(entry))
    return found


def processes_of_uid(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uids = re.search(r"^Uid:\s+(\d+)", status, re.M)
            if uids and int(uids.group(1)) == uid:
                found.append(int(entry))
    return found


# --- the normal path, in agentscope's shape -------------------------------------------------------


async def test_print_comes_back_in_agentscope_result_shape(sandbox):
    response = await make_execute_python_code(sandbox=sandbox)("print(2+2)")
    assert response.content[0]["text"] == "<returncode>0</returncode><stdout>4\n</stdout><stderr></stderr>"
    assert response.metadata["returncode"] == 0 and response.metadata["isolated"] is True


async def test_exception_gives_traceback_in_stderr_and_returncode_1(sandbox):
    result = await sandbox.run("x = 1\nraise ValueError('bad value')\n")
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert 'snippet.py", line 2, in <module>' in result.stderr
    assert result.stderr.rstrip().endswith("ValueError: bad value")
    assert "sandbox_worker" not in result.stderr  # our own frames are not shown


async def test_sys_exit_sets_the_returncode(sandbox):
    assert (await sandbox.run("import sys; print('bye'); sys.exit(3)")).returncode == 3
    assert (await sandbox.run("raise SystemExit('fatal')")).stderr == "fatal\n"


async def test_long_output_is_capped_with_a_visible_marker(isolated):
    box = limited(max_output_chars=200)
    result = await box.run("print('BEGIN' + 'x' * 100_000 + 'END')")
    assert result.returncode == 0 and result.truncated
    assert result.stdout.startswith("BEGIN") and result.stdout.endswith("END\n")
    assert "[... truncated: " in result.stdout and "limited to 200 characters" in result.stdout
    assert len(result.stdout) < 400
    noisy = await box.run("import sys\nsys.stderr.write('warning\\n' * 20_000)\nraise ValueError('the end')")
    assert noisy.returncode == 1 and noisy.truncated
    assert noisy.stderr.startswith("warning\n") and noisy.stderr.rstrip().endswith("ValueError: the end")


@pytest.mark.parametrize("which", ["factory", "module-level default"])
async def test_tool_schema_shows_the_model_only_code(sandbox, which):
    import agent_env.tools
    from agentscope.tool import Toolkit

    if which == "factory":
        tool, timeout_text = make_execute_python_code(sandbox=sandbox), "10 seconds"
    else:
        tool, timeout_text = agent_env.tools.execute_python_code, "30 seconds"
    toolkit = Toolkit()
    toolkit.register_tool_function(tool)
    (schema,) = toolkit.get_json_schemas()
    function = schema["function"]
    assert function["name"] == "execute_python_code"
    assert set(function["parameters"]["properties"]) == {"code"}
    assert function["parameters"]["properties"]["code"]["type"] == "string"
    assert function["parameters"]["required"] == ["code"]
    assert timeout_text in function["description"]  # the configured timeout is described, not a parameter
    assert RESULT_TEXT.match((await tool("print('hi')")).content[0]["text"]).groups() == ("0", "hi\n", "")


async def test_toolkit_call_returns_the_tagged_result(sandbox):
    from agentscope.message import ToolUseBlock
    from agentscope.tool import Toolkit

    toolkit = Toolkit()
    toolkit.register_tool_function(make_execute_python_code(sandbox=sandbox))
    call = ToolUseBlock(type="tool_use", id="1", name="execute_python_code", input={"code": "print(6*7)"})
    chunks = [chunk async for chunk in await toolkit.call_tool_function(call)]
    assert RESULT_TEXT.match(chunks[-1].content[0]["text"]).groups() == ("0", "42\n", "")


async def test_each_call_starts_from_scratch(isolated):
    leak = "import builtins, os\nbuiltins.leaked = 1\nopen('state.txt', 'w').write('x')\nprint(sorted(os.listdir('.')))"
    probe = "import builtins, os\nprint(hasattr(builtins, 'leaked'), sorted(os.listdir('.')))"
    for backend in ("warm", "cold"):
        box = PythonSandbox(SandboxConfig(backend=backend, warm_workers=1))
        try:
            assert (await box.run(leak)).stdout == "['snippet.py', 'state.txt']\n"
            for _ in range(3):
                assert (await box.run(probe)).stdout == "False ['snippet.py']\n"
        finally:
            box.close()


async def test_many_concurrent_calls_never_block_the_event_loop(sandbox):
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    results = await asyncio.gather(
        *(sandbox.run(f"import time; time.sleep(0.2); print({i})") for i in range(16))
    )
    stop.set()
    await ticking
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(16)]
    assert max(gaps) < 1.5  # a blocking call would stall it for seconds (16 x 0.2 s); margin for a busy CI machine


def test_one_sandbox_serves_several_event_loops_and_threads(sandbox):
    assert asyncio.run(sandbox.run("print('a')")).stdout == "a\n"
    assert asyncio.run(sandbox.run("print('b')")).stdout == "b\n"
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(asyncio.run(sandbox.run("print('c')")).stdout))
    thread.start()
    thread.join(30)
    assert seen == ["c\n"]


# --- attacks -------------------------------------------------------------------------------------


async def test_secret_in_the_parent_environment_is_invisible(isolated, monkeypatch):
    secret = secrets.token_hex(16)
    monkeypatch.setenv("AGENT_ENV_TEST_SECRET", secret)
    code = (
        "import os\n"
        "print(os.environ.get('AGENT_ENV_TEST_SECRET'), sorted(os.environ))\n"
        f"for path in ('/proc/self/environ', '/proc/1/environ', '/proc/{os.getpid()}/environ'):\n"
        "    try:\n"
        "        print(open(path, 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__)\n"
    )
    result = await limited().run(code)
    assert result.returncode == 0
    assert result.stdout.startswith("None ")
    assert secret not in result.stdout + result.stderr
    assert "AGENT_ENV_TEST_SECRET" not in result.stdout


async def test_writes_outside_the_sandbox_never_reach_the_host(isolated, tmp_path):
    token = secrets.token_hex(8)
    targets = [
        f"/tmp/agent-env-escape-{token}",
        REPO_ROOT / f"escape-{token}",
        tmp_path / "escape",
        Path.home() / f"escape-{token}",
    ]
    code = (
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('pwned')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('blocked', path, exc.strerror)\n"
    )
    result = await limited().run(code)
    assert result.returncode == 0
    assert "Read-only file system" in result.stdout
    assert [t for t in targets if Path(t).exists()] == []


async def test_fork_bomb_is_contained_and_leaves_nothing(isolated):
    code = (
        "import os, sys\n"
        "print(os.getuid(), flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    started = time.monotonic()
    result = await limited(timeout_s=1.5, max_processes=16).run(code)
    assert result.timed_out and result.returncode == -1
    assert "TimeoutError: The code execution exceeded the timeout of 1.5 seconds." in result.stderr
    assert time.monotonic() - started < 8
    uid = int(result.stdout.split()[0])
    assert uid != os.getuid()
    assert processes_of_uid(uid) == []
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork


async def test_process_limit_refuses_extra_processes(isolated):
    code = (
        "import subprocess\n"
        "ok = failed = 0\n"
        "for _ in range(20):\n"
        "    try:\n"
        "        subprocess.Popen(['sleep', '5']); ok += 1\n"
        "    except OSError:\n"
        "        failed += 1\n"
        "print(ok, failed)\n"
    )
    result = await limited(max_processes=8).run(code)
    ok, failed = map(int, result.stdout.split())
    assert ok < 8 and failed > 0


async def test_orphans_and_daemons_die_with_the_call(isolated):
    argument = marker()
    code = (
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{argument}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{argument}'])\n"
        "    os._exit(0)\n"
        "print('spawned')\n"
    )
    result = await limited().run(code)
    assert (result.returncode, result.stdout) == (0, "spawned\n")
    assert processes_running(argument) == []


async def test_timeout_kills_the_whole_process_tree(isolated):
    argument = marker()
    code = (
        "import subprocess, time\n"
        f"subprocess.Popen(['sleep', '{argument}'], start_new_session=True)\n"
        "print('started', flush=True)\n"
        "while True:\n"
        "    pass\n"
    )
    started = time.monotonic()
    result = await limited(timeout_s=1).run(code)
    assert result.timed_out and result.returncode == -1 and result.stdout == "started\n"
    assert time.monotonic() - started < 6
    assert processes_running(argument) == []


async def test_cancelled_call_kills_its_sandbox(isolated):
    argument = marker()
    code = f"import subprocess, time\nsubprocess.Popen(['sleep', '{argument}'])\ntime.sleep(60)\n"
    task = asyncio.create_task(limited(timeout_s=30).run(code))
    for _ in range(200):
        if processes_running(argument):
            break
        await asyncio.sleep(0.02)
    assert processes_running(argument)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(150):
        if not processes_running(argument):
            break
        await asyncio.sleep(0.02)
    assert processes_running(argument) == []


async def test_allocating_10_gb_fails_inside_the_sandbox(isolated):
    result = await limited(memory_mb=512).run("data = bytearray(10 * 1024**3)\nprint(len(data))")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.rstrip().endswith("MemoryError")
    grown = await limited(memory_mb=256).run(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))"
    )
    assert grown.returncode == 1 and "MemoryError" in grown.stderr


async def test_infinite_loop_is_stopped_by_the_configured_timeout(isolated):
    started = time.monotonic()
    result = await limited(timeout_s=1).run("while True:\n    pass")
    elapsed = time.monotonic() - started
    assert result.timed_out and result.returncode == -1
    assert result.stderr == "TimeoutError: The code execution exceeded the timeout of 1 seconds."
    assert 0.9 < elapsed < 6


async def test_cpu_limit_kills_a_busy_process(isolated):
    result = await limited(cpu_s=1, timeout_s=20).run("while True:\n    pass")
    assert not result.timed_out
    assert result.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


async def test_file_size_limit_stops_big_writes(isolated):
    result = await limited(file_size_mb=1).run("open('big', 'wb').write(b'x' * (2 << 20))")
    assert result.returncode == 1 and "File too large" in result.stderr


async def test_sockets_cannot_reach_the_host(isolated):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name = f"\0agent-env-test-{secrets.token_hex(8)}"
    abstract.bind(name)
    abstract.listen()
    abstract.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for family, address in ((socket.AF_INET, ('127.0.0.1', {port})), (socket.AF_UNIX, {name!r})):\n"
        "    try:\n"
        "        socket.socket(family).connect(address)\n"
        "        print('connected', address)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    try:
        result = await limited(timeout_s=5).run(code)
        assert result.returncode == 0 and "connected" not in result.stdout
        assert result.stdout.count("refused") == 2
        for server in (listener, abstract):
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        listener.close()
        abstract.close()


async def test_signalling_the_parent_or_the_host_does_nothing(isolated):
    bystander = subprocess.Popen(["sleep", "30"])
    code = (
        "import os, signal\n"
        f"for target in (os.getppid(), 1, {os.getpid()}, {bystander.pid}):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "    except OSError as exc:\n"
        "        print(target, type(exc).__name__)\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)  # every process this uid may signal\n"
        "except OSError as exc:\n"
        "    print(-1, type(exc).__name__)\n"
        "print('still here')\n"
    )
    try:
        result = await limited().run(code)
        assert result.stdout.endswith("still here\n") and result.returncode == 0
        assert bystander.poll() is None
        os.kill(os.getpid(), 0)  # this test process is alive (it is running this line)
    finally:
        bystander.kill()
        bystander.wait()


# --- isolation report, refusal, and the unisolated opt-out ------------------------------------------------


def test_status_reports_what_is_in_force(isolated):
    assert isolated.namespaces == ("pid", "net", "mount", "ipc", "uts")
    assert isolated.uid not in (None, 0) and isolated.read_only_root
    assert "network cut" in isolated.describe()


def test_missing_isolation_is_refused_with_how_to_opt_out():
    with pytest.raises(SandboxUnavailableError) as refused:
        PythonSandbox(SandboxConfig(), status=NOT_ISOLATED)
    message = str(refused.value)
    assert "no namespaces in this test" in message
    assert "SandboxConfig(allow_unisolated=True)" in message and "use the network" in message
    check_isolation(NOT_ISOLATED, SandboxConfig(allow_unisolated=True))  # the opt-out passes


async def test_unisolated_opt_out_still_scrubs_limits_and_cleans_up(monkeypatch):
    secret = secrets.token_hex(16)
    monkeypatch.setenv("AGENT_ENV_TEST_SECRET", secret)
    box = PythonSandbox(
        SandboxConfig(allow_unisolated=True, timeout_s=1, backend="cold"), status=NOT_ISOLATED
    )
    result = await box.run(
        "import os\nprint(os.getcwd() == os.environ['HOME'], os.getcwd())\nprint(os.environ.get('AGENT_ENV_TEST_SECRET'))"
    )
    same, workdir = result.stdout.splitlines()[0].split()
    assert same == "True" and result.stdout.splitlines()[1] == "None"
    assert not Path(workdir).exists()  # the fresh temp dir is removed after the call
    argument = marker()
    timed = await box.run(
        f"import subprocess\nsubprocess.Popen(['sleep', '{argument}'])\nwhile True:\n    pass"
    )
    assert timed.timed_out and processes_running(argument) == []


# --- swapping agentscope's tool ---------------------------------------------------------------------

# Run in a fresh interpreter: AgentEnv installs the swap process-wide (and keeps it), so a test process
# that built an env earlier would not show the install/restore cycle from agentscope's own tool.
SWAP_SCRIPT = r"""
import asyncio, json, logging
messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("agent_env").addHandler(handler)
logging.getLogger("agent_env").setLevel(logging.INFO)
import agentscope.tool, agentscope.tool._coding, agentscope.tool._coding._python
from agent_env.tools import SandboxConfig, install_sandboxed_python_tool
homes = [agentscope.tool, agentscope.tool._coding, agentscope.tool._coding._python]
original = agentscope.tool.execute_python_code

async def tutorial_style_step():  # imports inside the function, as the tutorial's workflow does
    from agentscope.message import ToolUseBlock
    from agentscope.tool import Toolkit, execute_python_code
    toolkit = Toolkit()
    toolkit.register_tool_function(execute_python_code)
    code = "import os; print(os.getuid(), os.environ.get('HOME'))"
    call = ToolUseBlock(type="tool_use", id="1", name="execute_python_code", input={"code": code})
    return [c async for c in await toolkit.call_tool_function(call)][-1].content[0]["text"]

out = {"agentscope_text": asyncio.run(original("print(2+2)")).content[0]["text"]}
config = SandboxConfig(timeout_s=5, warm_workers=1)
first = install_sandboxed_python_tool(config)
second = install_sandboxed_python_tool(config)
keeps = install_sandboxed_python_tool()  # no config: keeps the installed one
out["one_tool"] = second.tool is first.tool and keeps.tool is first.tool and keeps.config == config
out["patched_everywhere"] = all(m.execute_python_code is first.tool for m in homes)
out["ours_text"] = asyncio.run(first.tool("print(2+2)")).content[0]["text"]
out["step"] = asyncio.run(tutorial_style_step())
second.uninstall()
keeps.uninstall()
out["held_by_last_handle"] = agentscope.tool.execute_python_code is first.tool
first.uninstall()
first.uninstall()
out["restored"] = all(m.execute_python_code is original for m in homes)
with install_sandboxed_python_tool(config) as patch:
    out["context_patched"] = agentscope.tool.execute_python_code is patch.tool
out["context_restored"] = agentscope.tool.execute_python_code is original
out["messages"] = messages
print(json.dumps(out))
"""


def test_install_swaps_agentscope_tool_for_in_function_imports_and_reverts(isolated):
    done = subprocess.run([sys.executable, "-c", SWAP_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert (
        out["ours_text"]
        == out["agentscope_text"]
        == "<returncode>0</returncode><stdout>4\n</stdout><stderr></stderr>"
    )
    assert out["one_tool"] and out["patched_everywhere"] and out["held_by_last_handle"]
    returncode, stdout, _ = RESULT_TEXT.match(out["step"]).groups()
    uid, home = stdout.split()
    assert returncode == "0" and int(uid) != 0 and home == "/tmp"  # ran in the sandbox
    assert out["restored"] and out["context_patched"] and out["context_restored"]
    installs = [m for m in out["messages"] if "now runs code in the agent_env sandbox" in m]
    restores = [m for m in out["messages"] if "restored to agentscope's own" in m]
    assert len(installs) == 2 and len(restores) == 2  # once per installation, not per call
    assert "isolated: pid/net/mount/ipc/uts namespaces" in installs[0]
