"""Run records: stable hashes, whole-line appends, torn lines skipped."""

import contextlib
import json
import subprocess
import sys

import pytest

from vitbench import records


def test_hash_is_stable_and_order_independent():
    a = records.config_hash({"lr": 0.01, "task": "dtd", "steps": 10})
    assert a == records.config_hash({"steps": 10, "task": "dtd", "lr": 0.01})
    assert a != records.config_hash({"steps": 10, "task": "dtd", "lr": 0.03})
    assert len(a) == 16


def test_append_and_read_back(tmp_path):
    path = records.records_path(tmp_path, "demo")
    records.append(path, {"config_hash": "a", "accuracy": 0.5})
    records.append(path, {"config_hash": "b", "accuracy": 0.7})
    records.append(path, {"config_hash": "a", "accuracy": 0.6})
    assert path == tmp_path / "runs" / "demo.jsonl"
    assert [r["accuracy"] for r in records.read(path)] == [0.5, 0.7, 0.6]
    assert records.by_hash(records.read(path))["a"]["accuracy"] == 0.6
    assert records.read(tmp_path / "missing.jsonl") == []


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    records.append(path, {"config_hash": "a"})
    with open(path, "a") as f:
        f.write('{"config_hash": "b", "accur')
    with pytest.warns(UserWarning, match="runs.jsonl:2 is not a whole record"):
        assert records.read(path) == [{"config_hash": "a"}]


def test_a_line_that_is_not_utf8_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    records.append(path, {"config_hash": "b"})
    with pytest.warns(UserWarning, match="runs.jsonl:1 is not a whole record"):
        assert records.read(path) == [{"config_hash": "b"}]


def test_a_line_that_is_not_a_record_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"a": 1}\n')
    records.append(path, {"config_hash": "b"})
    with pytest.warns(UserWarning, match="runs.jsonl:1 is not a vitbench record"):
        assert records.read(path) == [{"config_hash": "b"}]


@pytest.mark.slow
def test_killed_writers_leave_only_whole_lines(tmp_path):
    # Processes appending big records are killed at random moments: every line is whole.
    path = tmp_path / "runs.jsonl"
    script = (f"import sys; sys.path.insert(0, {str(pathlib_root())!r})\n"
              "from vitbench import records\n"
              f"for i in range(100000): records.append({str(path)!r}, "
              "{'config_hash': str(i), 'pad': 'x' * 5000})\n")
    for _ in range(3):
        process = subprocess.Popen([sys.executable, "-c", script])
        try:
            process.wait(timeout=1.5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    lines = path.read_text().splitlines()
    whole = [line for line in lines if line.endswith("}")]
    fragments = [line for line in lines if not line.endswith("}")]
    # A kill can cut a write short (at a page boundary), at most once per process; the
    # fragment is a line of its own, so the next record is not lost with it.
    assert whole and len(fragments) <= 3
    assert all(json.loads(line)["pad"] == "x" * 5000 for line in whole)
    with pytest.warns(UserWarning, match="not a whole record") if fragments else \
            contextlib.nullcontext():
        assert len(records.read(path)) == len(whole)


def test_a_record_after_a_torn_line_starts_on_its_own_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    records.append(path, {"config_hash": "a"})
    with open(path, "a") as f:
        f.write('{"config_hash": "b", "pa')  # a write cut short
    records.append(path, {"config_hash": "c"})
    with pytest.warns(UserWarning, match=":2 is not a whole record"):
        assert [r["config_hash"] for r in records.read(path)] == ["a", "c"]


def pathlib_root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[1]


def test_atomically_written_files_get_the_permissions_open_gives(tmp_path):
    from vitbench import files

    written = files.write_atomic(tmp_path / "table.md", "| a |\n")
    (tmp_path / "plain.md").write_text("| a |\n")
    assert written.read_text() == "| a |\n"
    assert written.stat().st_mode == (tmp_path / "plain.md").stat().st_mode
