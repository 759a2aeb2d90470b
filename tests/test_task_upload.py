"""Registering a task, hostile folders and uploads: no symbolic link is followed, a refused
upload leaves nothing behind in Redis, and an impossible file layout is a 422."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import redis

from autoswarm.coordinator import keys
from tests.cli_helpers import invoke
from tests.conftest import RunningCoordinator, upload

SECRET = "the-host-secret-0451"


def _outside(tmp_path: Path, name: str, text: str) -> Path:
    secret = tmp_path / "elsewhere" / name
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(text)
    return secret


def _link_program(folder: Path, tmp_path: Path) -> None:
    (folder / "program.md").unlink()
    (folder / "program.md").symlink_to(_outside(tmp_path, "notes.md", SECRET))


def _link_toml(folder: Path, tmp_path: Path) -> None:
    text = (folder / "task.toml").read_text() + f'description = "{SECRET}"\n'
    (folder / "task.toml").unlink()
    (folder / "task.toml").symlink_to(_outside(tmp_path, "task.toml", text))


def _link_folder(folder: Path, tmp_path: Path) -> None:
    """The editable file sits in a folder that is a link to elsewhere."""
    elsewhere = _outside(tmp_path, "train.py", f"# {SECRET}\n" + (folder / "train.py").read_text())
    (folder / "train.py").unlink()
    (folder / "src").symlink_to(elsewhere.parent, target_is_directory=True)
    toml = (folder / "task.toml").read_text().replace('"train.py"', '"src/train.py"')
    (folder / "task.toml").write_text(toml)


@pytest.mark.parametrize(
    ("plant", "named"),
    [(_link_program, "program.md"), (_link_toml, "task.toml"), (_link_folder, "src/train.py")],
)
def test_task_register_refuses_a_symbolic_link_naming_the_file(
    coordinator: RunningCoordinator,
    task_dir: Path,
    tmp_path: Path,
    plant: Any,
    named: str,
) -> None:
    """A link in the folder (a file or a folder above one) is refused in one line naming
    it; nothing is registered and the linked file reaches no proposer."""
    plant(task_dir, tmp_path)
    result = invoke(
        "task", "register", str(task_dir), "--join", coordinator.base_url,
        "--token", coordinator.admin_token,
    )  # fmt: skip
    assert result.exit_code != 0
    message = " ".join(result.output.split())  # one message, however the console wraps it
    assert message.count("error:") == 1 and "Traceback" not in message
    assert f"{named}: is a symbolic link" in message
    with coordinator.client() as admin:
        assert admin.get("/api/v1/tasks").json() == []
        assert SECRET not in admin.get("/api/v1/tasks/tiny/context").text


def test_a_refused_task_upload_leaves_no_blob_in_redis(
    coordinator: RunningCoordinator, task_dir: Path, redis_client: redis.Redis
) -> None:
    """Other files under a registered name are a 409 that stores none of them."""
    with coordinator.client() as admin:
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 201
        before = set(redis_client.keys(keys.blob("*")) + redis_client.keys(keys.bundle("*")))
        (task_dir / "train.py").write_text("print('---')\nprint('score: 2.0')\n")
        (task_dir / "data.bin").write_bytes(b"\x00" * 4096)
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 409
    after = set(redis_client.keys(keys.blob("*")) + redis_client.keys(keys.bundle("*")))
    assert after == before


@pytest.mark.parametrize("order", [("x", "x/y"), ("x/y", "x")])
def test_an_upload_with_a_file_inside_a_file_is_422(
    coordinator: RunningCoordinator, task_dir: Path, order: tuple[str, str]
) -> None:
    """`x` beside `x/y` cannot be laid out: 422 naming them, nothing registered."""
    body = upload(task_dir)
    for path in order:
        body["files"][path] = base64.b64encode(b"1").decode()
    with coordinator.client() as admin:
        answer = admin.post("/api/v1/tasks", json=body)
        assert answer.status_code == 422 and "'x'" in answer.json()["detail"]
        assert admin.get("/api/v1/tasks").json() == []
