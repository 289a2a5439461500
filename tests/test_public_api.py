"""``optivgi`` declares its public API exactly, and the models stand on their own."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import optivgi

PUBLIC = {
    "__version__",
    # models
    "EV", "ChargingProfile", "ChargingRateUnit", "PowerSchedule", "SiteConstraints",
    # planning
    "Algorithm", "Problem", "build_problem", "plan", "Scenario", "load_scenario", "parse_scenario",
    # running a site
    "Settings", "Scheduler", "Translation", "SendOutcome", "load_algorithm", "load_translation_class",
    # errors
    "OptiVGIError", "ConfigurationError", "ScenarioError", "PluginError", "ScheduleError",
    "InfeasibleScheduleError", "ScheduleValidationError", "CSMSError", "CSMSConnectionError", "CSMSResponseError",
}
ROOT = Path(__file__).resolve().parents[1]


def test_all_is_exactly_the_public_api_and_every_name_resolves() -> None:
    assert set(optivgi.__all__) == PUBLIC
    assert len(optivgi.__all__) == len(PUBLIC)  # no duplicates
    for name in optivgi.__all__:
        assert getattr(optivgi, name) is not None
    from optivgi.models import EV
    from optivgi.translation import Translation

    assert optivgi.EV is EV and optivgi.Translation is Translation


def test_version_is_the_installed_distribution_version() -> None:
    assert optivgi.__version__ == importlib.metadata.version("opti-vgi")


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        optivgi.nothing_here  # noqa: B018
    except AttributeError as exc:
        assert "nothing_here" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_importing_optivgi_imports_no_numpy() -> None:
    code = "import sys, optivgi; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_models_do_not_import_from_algorithms() -> None:
    for path in sorted((ROOT / "optivgi" / "models").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("optivgi.algorithms"), f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("optivgi.algorithms") for a in node.names), path.name
