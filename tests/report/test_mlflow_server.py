"""`mlflow server` on the SQLite store serves the study's runs and the report's files, checked
through MLflow's REST API (bound to 127.0.0.1 on a free port, bounded wait, always stopped)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from report_fixtures import EXPERIMENT, N_RUNS, Study

from sah.report import build_report
from sah.report.collect import Source

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


def wait_healthy(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer
            pass
        time.sleep(0.5)
    raise AssertionError(f"mlflow server not healthy after {START_TIMEOUT_S} s:\n{log_tail(log)}")


def test_mlflow_server_serves_the_runs_and_the_report(study: Study, tmp_path: Path) -> None:
    files = build_report(Source(study.uri, EXPERIMENT), tmp_path / "out", baseline="method=none")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    log = (tmp_path / "server.log").open("w")
    command = [str(mlflow), "server", "--backend-store-uri", study.uri, "--workers", "1"]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers go with it
    )
    try:
        wait_healthy(base, proc, tmp_path / "server.log")
        api = f"{base}/api/2.0/mlflow"
        experiment = requests.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT}, timeout=30
        ).json()["experiment"]
        children = requests.post(
            f"{api}/runs/search",
            json={
                "experiment_ids": [experiment["experiment_id"]],
                "filter": f"tags.`mlflow.parentRunId` = '{study.parent_run_id}'",
                "max_results": 100,
            },
            timeout=30,
        ).json()["runs"]
        assert len(children) == N_RUNS
        tags = {t["key"]: t["value"] for t in children[0]["data"]["tags"]}
        assert {"method", "rank", "target", "fold"} <= set(tags)

        listed = requests.get(
            f"{api}/artifacts/list",
            params={"run_id": files.mlflow_run_id, "path": "report"},
            timeout=30,
        ).json()["files"]
        names = {Path(f["path"]).name for f in listed}
        assert {"report.md", "study_table.csv", "dice_vs_trainable_params.png"} <= names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
