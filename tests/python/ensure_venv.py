#!/usr/bin/env python3
"""Creates, once, the virtualenv in which tests/python/cc_client_flow.py runs.

Usage: ensure_venv.py VENV_DIR

Installs the pinned `cc-clients-python-lib` without its dependencies (it declares
Python >= 3.11.9 and a long list of packages its IAM client does not import) and `requests`,
the only one it needs. Idempotent: a marker file records what was installed, and a venv
without the marker (an interrupted run) is rebuilt. Concurrent callers (parallel tests, CI)
serialise on an flock of VENV_DIR.lock, which the kernel releases if a caller dies.
Prints the path of the venv's python on stdout.
"""

import fcntl
import os
import shutil
import subprocess
import sys

# Pinned so every machine runs the same client code.
CLIENT = "cc-clients-python-lib==0.30.3.0"
REQUESTS = "requests==2.32.3"
MARKER_NAME = ".keygate-venv"
MARKER = f"{CLIENT} {REQUESTS}\n"


def python_of(venv):
    return os.path.join(venv, "bin", "python")


def is_ready(venv):
    try:
        with open(os.path.join(venv, MARKER_NAME), encoding="utf-8") as marker:
            return marker.read() == MARKER and os.path.exists(python_of(venv))
    except OSError:
        return False


def pip(venv, *args):
    subprocess.run(
        [python_of(venv), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        check=True,
        stdout=sys.stderr,
    )


def build(venv):
    if os.path.exists(venv):
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, stdout=sys.stderr)
    pip(venv, "--no-deps", "--ignore-requires-python", CLIENT)
    # Checking the client's unmet declared dependencies would only print noise.
    pip(venv, "--no-warn-conflicts", REQUESTS)
    # Fail here, not in the test, if the client cannot be imported.
    subprocess.run(
        [python_of(venv), "-c", "from cc_clients_python_lib.iam_client import IamClient"],
        check=True,
    )
    with open(os.path.join(venv, MARKER_NAME), "w", encoding="utf-8") as marker:
        marker.write(MARKER)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ensure_venv.py VENV_DIR")
    venv = os.path.abspath(sys.argv[1])
    if not is_ready(venv):
        os.makedirs(os.path.dirname(venv), exist_ok=True)
        with open(venv + ".lock", "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_ready(venv):
                build(venv)
    print(python_of(venv))


if __name__ == "__main__":
    main()
