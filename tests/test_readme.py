"""The README's column tables are the registry's (one source of truth)."""
from pathlib import Path
import runpy

ROOT = Path(__file__).resolve().parent.parent


def test_readme_column_tables_match_registry():
    gen = runpy.run_path(str(ROOT / "tools" / "gen_readme_columns.py"))
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- columns:begin -->\n", 1)[1].split("<!-- columns:end -->", 1)[0]
    assert section == gen["tables"](), "run: python tools/gen_readme_columns.py"


def test_readme_commands_are_what_ci_runs():
    text = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "./setup.sh && .venv/bin/python -m pytest -q"
    assert test_cmd in text and test_cmd in ci
