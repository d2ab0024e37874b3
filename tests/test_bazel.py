"""Bazel users can build the binaries and run the tests (WORKSPACE, BUILD, tests/BUILD)."""

import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_test_file_has_a_bazel_target():
    with open(os.path.join(REPO, "tests", "BUILD")) as f:
        build = f.read()
    files = sorted(
        f[:-3] for f in os.listdir(os.path.join(REPO, "tests")) if f.startswith("test_") and f.endswith(".py")
    )
    missing = [name for name in files if name != "test_bazel" and f'"{name}": ' not in build]
    assert not missing, f"add py_test targets to tests/BUILD for {missing}"


@pytest.mark.skipif(
    shutil.which("bazel") is None,
    reason="bazel is not installed (make test installs Debian's bazel-bootstrap where apt-get works)",
)
def test_bazel_builds_the_binaries_and_runs_a_test_offline():
    if "TEST_SRCDIR" in os.environ:
        pytest.skip("already running inside a Bazel test")
    built = subprocess.run(
        ["bazel", "build", "//:faq_train", "//:exporter", "//:faq_tf", "//:export_tflite"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tested = subprocess.run(
        ["bazel", "test", "//tests:test_schedules", "//tests:test_calibration"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = tested.stdout + tested.stderr
    assert tested.returncode == 0, output[-3000:]
    assert "//tests:test_schedules" in output and "PASSED" in output
    log = os.path.join(REPO, "bazel-testlogs", "tests", "test_schedules", "test.log")
    assert " passed" in open(log).read()  # pytest really ran the file's tests
