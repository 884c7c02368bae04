"""The commands the CLI prints for a person: spelled for where they are (absolute executables, the
real DAGSTER_HOME, data folder and port), and `./run dev` only where it does the same thing."""

import contextlib
import shlex
import socket
import sys
from pathlib import Path

from defect_assets import hints
from defect_assets.hints import CHECKOUT, cli_command, dagster_ui, dev_command


def test_the_dev_command_names_the_instance_the_data_and_the_port_with_absolute_paths(tmp_path):
    words = shlex.split(dev_command(tmp_path / "home", tmp_path / "data", 3123))
    assert words[:2] == [f"DAGSTER_HOME={tmp_path / 'home'}", f"DEFECT_ASSETS_DATA_DIR={tmp_path / 'data'}"]
    assert Path(words[2]).is_absolute() and Path(words[2]).is_file() and Path(words[2]).name == "dagster"
    assert words[3:] == ["dev", "-w", str(CHECKOUT / "workspace.yaml"), "-p", "3123"]


def test_run_dev_only_where_it_is_the_same_thing(tmp_path, monkeypatch):
    # the checkout's own environment, instance and data folder: `./run dev` (which cds to the checkout)
    monkeypatch.setattr(sys, "executable", str(CHECKOUT / ".venv" / "bin" / "python"))
    monkeypatch.chdir(CHECKOUT)
    assert dev_command(CHECKOUT / ".dagster_home", CHECKOUT / "data", 3000) == "./run dev -p 3000"
    monkeypatch.chdir(tmp_path)
    assert dev_command(CHECKOUT / ".dagster_home", CHECKOUT / "data", 3000) == f"{CHECKOUT / 'run'} dev -p 3000"
    # another data folder or instance: `./run dev` would show something else, so every setting is spelled out
    assert dev_command(CHECKOUT / ".dagster_home", tmp_path / "data", 3000).startswith("DAGSTER_HOME=")
    assert dev_command(tmp_path / "home", CHECKOUT / "data", 3000).startswith("DAGSTER_HOME=")


def test_the_cli_command_is_absolute_and_names_a_data_folder_that_is_not_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = shlex.split(cli_command(tmp_path / "data"))
    assert Path(plain[0]).is_absolute() and Path(plain[0]).is_file() and "--data-dir" not in plain
    other = shlex.split(cli_command(tmp_path / "elsewhere"))
    assert other[-2:] == ["--data-dir", str(tmp_path / "elsewhere")]


def test_a_taken_port_3000_moves_the_ui_and_its_command_together(tmp_path, monkeypatch):
    monkeypatch.delenv("DEFECT_ASSETS_DAGSTER_UI_URL", raising=False)
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # already taken by something else: as good for this test
            listener.bind(("127.0.0.1", hints.DAGSTER_UI_PORT))
            listener.listen()
        ui = dagster_ui(tmp_path / "home", tmp_path / "data", "no-such-run")
    port = ui.url.rsplit(":", 1)[1]
    assert port != str(hints.DAGSTER_UI_PORT) and not ui.running
    assert ui.command.endswith(f"-p {port}") and f"DAGSTER_HOME={tmp_path / 'home'}" in ui.command
    assert dagster_ui(tmp_path / "home", tmp_path / "data") is ui  # one answer per process: hints and nav agree


def test_a_configured_ui_address_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECT_ASSETS_DAGSTER_UI_URL", "http://127.0.0.1:3456/")
    ui = dagster_ui(tmp_path / "home", tmp_path / "data")
    assert ui.url == "http://127.0.0.1:3456" and ui.command.endswith("-p 3456")
    monkeypatch.setenv("DEFECT_ASSETS_DAGSTER_UI_URL", "https://dagster.example.com")
    remote = dagster_ui(tmp_path / "home2", tmp_path / "data")
    assert remote.url == "https://dagster.example.com" and remote.command is None
    assert remote.how() == "(DEFECT_ASSETS_DAGSTER_UI_URL)"
