"""ScanQ's top-level package names (cli, db, models, pacs, web, worker) are generic:
in this environment they are ScanQ's alone, and a package of the same name earlier on
the path shadows ScanQ's, which the layout check names before anything fails."""

import importlib.metadata
import subprocess
import sys

from scanq.layout import TOP_LEVEL, foreign_packages

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_no_other_installed_distribution_provides_scanq_s_packages():
    provided = importlib.metadata.packages_distributions()
    for name in TOP_LEVEL:
        assert set(provided.get(name, ["scanq"])) == {"scanq"}, (name, provided[name])
    assert foreign_packages() == {}


def test_a_package_of_the_same_name_earlier_on_the_path_shadows_scanq_s(tmp_path):
    """What a second distribution called `web` does in one environment: `import web`
    is the other one (and, with an editable install, `web.app` still ScanQ's: a mix),
    and the check says which package is foreign and where."""
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "__init__.py").write_text("ANOTHER = True\n")
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from scanq.layout import check_packages\n"
        "import web\n"
        "print('web is the other one:', getattr(web, 'ANOTHER', False))\n"
        "try:\n"
        "    check_packages()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    assert "web is the other one: True" in out
    assert f"web ({tmp_path / 'web' / '__init__.py'})" in out and "db (" not in out
