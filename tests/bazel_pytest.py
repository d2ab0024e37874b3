"""Runs one test file under pytest: the `main` of every Bazel py_test in tests/BUILD."""

import os
import sys

import pytest

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    files = [os.path.join(here, os.path.basename(f)) for f in sys.argv[1:]]
    sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", f"--rootdir={here}", *files]))
