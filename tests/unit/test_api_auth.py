"""The role table, the token store and the submitter's trip through task records."""

from __future__ import annotations

import hashlib
import importlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from praxis_grpc.api.auth import ANONYMOUS, METHOD_ROLES, AuthInterceptor, Caller
from praxis_grpc.api.tokens import Role, TokenFileError, TokenStore, add_token
from praxis_grpc.errors import PermissionDenied
from praxis_grpc.ha.records import decode_task, encode_task
from praxis_grpc.tasks.model import Submission, Task, TaskState
from praxis_grpc.wire import task_from_proto, task_to_proto
from praxis_grpc.wire_input import submission_fields

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROTOS = Path(__file__).resolve().parents[2] / "protos" / "praxis" / "v1"


def _public_methods() -> set[str]:
    """Every method of every service in protos/praxis/v1/*.proto."""
    protos = sorted(PROTOS.glob("*.proto"))
    assert len(protos) >= 3
    modules = [
        importlib.import_module(f"praxis_grpc._gen.praxis.v1.{proto.stem}_pb2") for proto in protos
    ]
    return {
        f"/{service.full_name}/{method.name}"
        for module in modules
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_public_method_has_a_role_and_no_role_names_a_missing_method() -> None:
    methods = _public_methods()
    assert "/praxis.v1.TaskService/SubmitTask" in methods
    assert methods - METHOD_ROLES.keys() == set(), "new RPC: give it a role in api/auth.py"
    assert METHOD_ROLES.keys() - methods == set()


def test_roles_of_the_issue() -> None:
    assert METHOD_ROLES["/praxis.v1.AgentService/Drain"] is Role.ADMIN
    assert METHOD_ROLES["/praxis.v1.TaskService/SubmitTask"] is Role.CLIENT
    assert METHOD_ROLES["/praxis.v1.TaskService/CancelTask"] is Role.CLIENT
    reads = [m for m in METHOD_ROLES if m.rsplit("/", 1)[1].startswith(("Get", "List", "Watch"))]
    assert {METHOD_ROLES[m] for m in reads} == {Role.READER}


def test_an_unmapped_method_is_refused_and_health_is_configurable() -> None:
    closed = AuthInterceptor(TokenStore([]), open_health=False, open_reflection=False)
    with pytest.raises(PermissionDenied, match="not open to any role"):
        closed.required_role("/praxis.v1.TaskService/PurgeEverything")
    assert closed.required_role("/grpc.health.v1.Health/Check") is Role.READER
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    assert closed.required_role(reflection) is Role.READER
    assert AuthInterceptor(TokenStore([])).required_role("/grpc.health.v1.Health/Watch") is None


def test_callers_see_tasks_by_role() -> None:
    assert Caller("alice", Role.CLIENT).owns("alice")
    assert not Caller("alice", Role.CLIENT).owns("bob")
    assert not Caller("alice", Role.CLIENT).owns("")
    assert Caller("grafana", Role.READER).owns("bob")
    assert ANONYMOUS.owns("bob")
    assert ANONYMOUS.name == ""


def test_tokens_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "tokens.yaml"
    file.parent.mkdir()
    token = add_token(file, "ci", Role.CLIENT)
    assert len(token) >= 40
    assert token not in file.read_text()
    assert hashlib.sha256(token.encode()).hexdigest() in file.read_text()
    assert file.stat().st_mode & 0o777 == 0o600
    store = TokenStore.load(file)
    entry = store.authenticate(token)
    assert entry is not None
    assert (entry.name, entry.role) == ("ci", Role.CLIENT)
    assert store.authenticate(token + "x") is None
    assert store.authenticate("") is None
    with pytest.raises(TokenFileError, match="already exists"):
        add_token(file, "ci", Role.ADMIN)
    assert add_token(file, "other", Role.ADMIN) != token


def test_a_tokens_file_with_a_duplicate_digest_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "tokens.yaml"
    digest = "a" * 64
    file.write_text(
        f"- {{name: a, role: reader, sha256: {digest}}}\n"
        f"- {{name: b, role: admin, sha256: {digest}}}\n"
    )
    with pytest.raises(TokenFileError, match=r"\[1\]\.sha256: used by an earlier entry"):
        TokenStore.load(file)


def _task(**fields: object) -> Task:
    values: dict[str, object] = {
        "tool": "echo",
        "arguments": {},
        "state": TaskState.SUBMITTED,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    return Task(task_id="6f1e6e3e-8b7d-4a7e-9c1e-000000000001", **values)  # type: ignore[arg-type]


def test_the_submitter_travels_with_task_records_and_messages() -> None:
    task = _task(submitter="alice")
    assert decode_task(encode_task(task)).submitter == "alice"
    assert task_from_proto(task_to_proto(task)).submitter == "alice"
    legacy = encode_task(_task()).replace(b',"submitter":""', b"")
    assert b"submitter" not in legacy
    assert decode_task(legacy).submitter == ""


def test_the_submitter_is_part_of_a_submissions_identity() -> None:
    anonymous = Submission(tool="echo", arguments={"a": 1})
    # The digest of a submission without a submitter is the one stored before api.auth.
    before = json.dumps(["echo", {"a": 1}, None, [], ""], sort_keys=True, separators=(",", ":"))
    assert anonymous.fingerprint() == hashlib.sha256(before.encode()).hexdigest()
    alice = Submission(tool="echo", arguments={"a": 1}, submitter="alice")
    bob = Submission(tool="echo", arguments={"a": 1}, submitter="bob")
    assert len({anonymous.fingerprint(), alice.fingerprint(), bob.fingerprint()}) == 3
    assert submission_fields(alice)["submitter"] == "alice"
    assert "submitter" not in submission_fields(anonymous)
