"""The README's two commands: in a virtual environment (PEP 668 systems refuse
`pip install` outside one), and the test command is the one CI runs."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)[:2]


def test_readme_commands_use_a_virtual_environment() -> None:
    install, test = _commands()
    for cmd in (install, test):
        assert cmd.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install "), cmd
        assert "python3 -m pip" not in cmd and "--break-system-packages" not in cmd
    assert install.endswith("python -m nexus")
    assert "cargo test --workspace --exclude nexus-python" in test and test.endswith("python -m pytest tests")


def test_ci_runs_the_readme_test_command_as_written() -> None:
    _, test = _commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci, "the README's test command must be a line of .ci/run"


def test_readme_names_the_packages_a_bare_machine_needs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    for package in ("python3-venv", "gcc", "curl", "sh.rustup.rs", "externally-managed-environment"):
        assert package in section, package
