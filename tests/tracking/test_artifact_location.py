"""Where a run's artifacts go: beside a local store as before, to the tracking server's own
``--artifacts-destination`` when the tracking URI is a server (a real ``mlflow server`` on
127.0.0.1, started here on a free port and always stopped)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from sah.cli.schema import register_schema
from sah.cli.train import CONFIG_DIR
from sah.tracking import get_client, resolve_experiment, ui_command
from sah.tracking.mlflow_run import artifact_location_for

START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URI, artifacts destination) of an ``mlflow server`` serving artifacts (proxied)."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    destination = folder / "server-artifacts"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(destination),
            "--workers",
            "1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers go with it
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (folder / "server.log").read_text()[-2000:]
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow server not healthy in time"
            time.sleep(0.5)
        yield uri, destination
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()


def compose_logger(overrides: list[str]):
    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides).logger


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_server_keeps_the_artifacts_at_its_destination(server, tmp_path: Path) -> None:
    uri, destination = server
    client_folder = tmp_path / "mlartifacts"  # what a local store would use
    client = get_client(uri)
    experiment_id = resolve_experiment(client, "sah-server-rule", str(client_folder))
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    run = client.create_run(experiment_id)
    note = tmp_path / "note.txt"
    note.write_text("a checkpoint stand-in\n")
    client.log_artifact(run.info.run_id, str(note), artifact_path="checkpoints")

    (stored,) = [p for p in files_under(destination) if p.name == "note.txt"]
    assert stored.read_text() == "a checkpoint stand-in\n"
    assert stored.parent.name == "checkpoints" and run.info.run_id in stored.parts
    assert not client_folder.exists()
    # Another machine reads it back through the server alone.
    fetched = client.download_artifacts(run.info.run_id, "checkpoints/note.txt", str(tmp_path))
    assert Path(fetched).read_text() == "a checkpoint stand-in\n"


def test_the_lightning_logger_leaves_the_location_to_the_server(server, tmp_path: Path) -> None:
    uri, destination = server
    logger_cfg = compose_logger(
        [f"tracking.uri={uri}", f"tracking.artifact_location={tmp_path / 'mlartifacts'}"]
    )
    assert logger_cfg.artifact_location is None
    logger = instantiate(logger_cfg, experiment_name="sah-logger-rule")
    note = tmp_path / "config.yaml"
    note.write_text("seed: 0\n")
    logger.experiment.log_artifact(logger.run_id, str(note))
    assert [p.read_text() for p in files_under(destination) if p.name == "config.yaml"] == [
        "seed: 0\n"
    ]
    assert not (tmp_path / "mlartifacts").exists()


def test_a_local_store_keeps_the_mlartifacts_folder(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "mlartifacts"
    client = get_client(uri)
    experiment_id = resolve_experiment(client, "sah-local-rule", str(folder))
    assert client.get_experiment(experiment_id).artifact_location == folder.resolve().as_uri()
    logger_cfg = compose_logger([f"tracking.uri={uri}", f"tracking.artifact_location={folder}"])
    assert logger_cfg.artifact_location == folder.resolve().as_uri()


@pytest.mark.parametrize(
    ("uri", "remote"),
    [
        ("http://127.0.0.1:5055", True),
        ("https://mlflow.lab.example", True),
        ("databricks", True),
        ("databricks://profile", True),
        ("sqlite:////data/mlflow.db", False),
        ("file:///data/mlruns", False),
        ("/data/mlruns", False),
        ("postgresql://lab@db/mlflow", False),  # written directly: the client's folder
    ],
)
def test_which_uris_leave_the_location_to_the_server(uri: str, remote: bool) -> None:
    location = artifact_location_for(uri, "/data/mlartifacts")
    assert location == (None if remote else "file:///data/mlartifacts")


def test_the_ui_hint_fits_the_kind_of_store() -> None:
    assert ui_command("http://127.0.0.1:5055") == (
        "open http://127.0.0.1:5055 in a browser (the tracking server is the UI)"
    )
    assert "mlflow ui" not in ui_command("https://mlflow.lab.example")
    assert (
        ui_command("sqlite:////w/mlflow.db")
        == "mlflow ui --backend-store-uri sqlite:////w/mlflow.db"
    )
    assert ui_command("file:///w/mlruns") == "mlflow ui --backend-store-uri file:///w/mlruns"
