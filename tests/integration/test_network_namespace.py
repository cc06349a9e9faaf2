"""The real commands in a network namespace with nothing but loopback: Nook needs no network to index and to answer.

`unshare -n` gives the commands a network namespace of their own with a single, unconfigured loopback interface.
One driver process runs inside it: it checks the namespace has no other interface, makes one TCP connection attempt
to a non-loopback address as a control (it must fail at once: there is no route anywhere), then runs
`python -m ingest data/samples` and `python -m rag ask ... --json` with the default llamacpp backend and the bundled
SmolLM2. The child environment has none of the offline switches, so the entry points must set them themselves.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rag.privacy import OFFLINE_ENV
from tests.conftest import ROOT, SAMPLES
from tests.integration.helpers import nook_env

pytestmark = pytest.mark.slow

FAST = {"NOOK_MAX_TOKENS": "24", "NOOK_N_CTX": "2048", "NOOK_RETRIEVAL_K": "3"}
QUESTION = "What is my sourdough starter called?"
CONTROL_ADDRESS = ("10.255.255.1", 9)  # private range, never answered; only tried once there is no route to it

# Runs inside the namespace. argv: control host, control port, sample folder (relative to cwd), question.
DRIVER = r"""
import json, socket, subprocess, sys, time

host, port, samples, question = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
report = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
if report["interfaces"] == ["lo"]:  # only then: with no interface but loopback the attempt cannot leave the machine
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=2).close()
        report["control"] = "connected"
    except OSError as exc:
        report["control"] = exc.errno
    report["control_seconds"] = time.monotonic() - started
commands = {
    "ingest": [sys.executable, "-m", "ingest", samples],
    "ask": [sys.executable, "-m", "rag", "ask", question, "--json"],
}
for name, command in commands.items():
    done = subprocess.run(command, capture_output=True, text=True, timeout=420)
    report[name] = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-3000:]}
print(json.dumps(report))
"""


def in_empty_namespace(*command: str) -> list[str]:
    """The command run in a new network namespace, with its loopback interface brought up when `ip` can."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh", *command]


def require_unshare() -> None:
    """Skip, saying why, when this machine cannot make network namespaces."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed (util-linux), so no network namespace can be made")
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        pytest.skip(f"unshare -n cannot run here: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"unshare -n is not permitted here (exit {probe.returncode}): {probe.stderr.strip()}")


def offline_switches_removed(env: dict[str, str]) -> dict[str, str]:
    """The environment without Nook's offline switches: the entry points must set them."""
    return {key: value for key, value in env.items() if key not in OFFLINE_ENV}


def test_ingest_and_ask_work_in_a_namespace_without_network(tmp_path: Path) -> None:
    require_unshare()
    data_dir = tmp_path / "data"
    env = offline_switches_removed(nook_env(data_dir, **FAST, NOOK_ANSWER_CACHE="false"))
    command = in_empty_namespace(
        sys.executable, "-c", DRIVER, *map(str, CONTROL_ADDRESS), str(SAMPLES.relative_to(ROOT)), QUESTION
    )
    driver = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=860)
    assert driver.returncode == 0, driver.stderr
    report: dict[str, Any] = json.loads(driver.stdout)

    # The control: this namespace really has no network.
    assert report["interfaces"] == ["lo"]
    assert report["control"] == errno.ENETUNREACH
    assert report["control_seconds"] < 1.0  # refused by the kernel at once, not a timeout

    assert report["ingest"]["returncode"] == 0, report["ingest"]["stderr"]
    ask = report["ask"]
    assert ask["returncode"] == 0, ask["stderr"]
    answer = json.loads(ask["stdout"])
    assert answer["question"] == QUESTION
    assert answer["found"] is True and answer["answer"].strip()
    sources = [Path(s["source"]).resolve() for s in answer["sources"]]
    assert sources and all(path.is_relative_to(SAMPLES.resolve()) and path.is_file() for path in sources)
    assert SAMPLES.resolve() / "notes" / "sourdough.md" in sources
