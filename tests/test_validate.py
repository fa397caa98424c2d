"""``pdscan validate``: the table, its exit status, and a backend that is wrong."""

import pdscan.backends.array_api as array_api
from pdscan import cli


def run(capsys, *args):
    status = cli.main(["validate", "--size", "2,9,3,2", "--backends", "numpy,array_api",
                       "--dtypes", "float32,complex128", *args])
    return status, capsys.readouterr().out.splitlines()


def test_every_row_within_tolerance(capsys):
    status, lines = run(capsys)
    rows = [line.split() for line in lines if line.startswith(("numpy ", "array_api "))]
    assert status == 0 and len(rows) == 4 and lines[-1] == "4 of 4 rows within tolerance"
    assert all(row[6] == "ok" for row in rows)
    # the reference compared with itself says so
    assert [" ".join(row[6:]) for row in rows if row[0] == "numpy"] == ["ok", "ok (the reference itself)"]


def test_a_wrong_backend_fails_its_rows_and_the_exit_status(capsys, monkeypatch):
    forward = array_api.BACKEND.forward
    monkeypatch.setattr(array_api.BACKEND, "forward", lambda p: forward(p) * 1.001)
    status, lines = run(capsys)
    wrong = [line.split() for line in lines if line.startswith("array_api ")]
    assert status == 1 and len(wrong) == 2 and all(row[6] == "FAIL" for row in wrong)
    assert lines[-1] == "2 of 4 rows within tolerance"
