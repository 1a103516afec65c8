import subprocess
import sys

import pytest

import butterfly as bf


def test_every_public_name_resolves_to_its_definition():
    """The top-level names are imported on first use; each is the object its module defines."""
    import butterfly.model._butterfly
    import butterfly.train._settings

    assert bf.Butterfly is butterfly.model.Butterfly and bf.FAST_SETTING is butterfly.train.FAST_SETTING
    for name in bf.__all__:
        value = getattr(bf, name)
        assert value is not None and name in dir(bf)
        assert getattr(value, "__name__", name).rsplit(".", 1)[-1] == name or name == "FAST_SETTING"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(bf, "no_such_name")  # noqa: B009 (the name is the point)


def test_import_and_help_do_not_wait_for_torch():
    """``import butterfly`` and ``butterfly --help`` load neither torch nor scanpy (seconds each), beyond what
    anndata itself loads (anndata 0.10 imports torch when installed)."""
    code = (
        "import sys, anndata\nbefore = set(sys.modules)\nimport butterfly, butterfly.cli\n"
        "try:\n    butterfly.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'scanpy') if m in sys.modules and m not in before))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: butterfly" in run.stdout
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_python_dash_m_runs_the_command_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "butterfly", "info", str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode == 2 and "is not a saved butterfly model (no config.json)" in run.stderr
    version = subprocess.run([sys.executable, "-m", "butterfly", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"butterfly {bf.__version__}"
