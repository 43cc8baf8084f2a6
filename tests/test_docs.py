"""The docs cannot rot: the Python examples in docs/api.md and the README run and print what the page says, and
the README's pasted command outputs are what the commands print today."""

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
@pytest.mark.parametrize(("page", "least"), [("docs/api.md", 20), ("README.md", 10)])
def test_python_examples_print_what_the_page_says(page: str, least: int) -> None:
    result = doctest.testfile(str(DOCS.parent / page), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted >= least and result.failed == 0


README = DOCS.parent / "README.md"


def pasted_outputs() -> list[tuple[str, list[str]]]:
    """(command, pasted lines) for every README block marked ``<!-- output of: xpusim ... -->``."""
    lines, out = README.read_text().splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("<!-- output of: xpusim "):
            command = line.removeprefix("<!-- output of: xpusim ").removesuffix(" -->")
            end = lines.index("```", i + 2)
            out.append((command, lines[i + 2:end]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("command", "pasted"), pasted_outputs(), ids=[c for c, _ in pasted_outputs()])
def test_readme_outputs_are_what_the_command_prints(command: str, pasted: list[str]) -> None:
    import shlex

    from typer.testing import CliRunner

    from xpusim.cli import app

    r = CliRunner().invoke(app, shlex.split(command))
    assert r.exit_code == 0, r.stderr
    printed = {ln.rstrip() for ln in r.stdout.splitlines()}
    missing = [ln for ln in pasted if ln.strip() and ln.rstrip() not in printed]
    assert missing == [], f"README lines `xpusim {command}` no longer prints (regenerate):\n" + "\n".join(missing)
