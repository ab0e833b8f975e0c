"""Build hook: ship the top-level ``topics/`` and ``schemas/`` inside the wheel.

They stay top-level in the repository, the source of truth that services in any language
read. A wheel carries copies under ``connector/_shipped/``, where
``connector.shipped.shipped_dir`` looks first, so an installed connector finds them
without the repository. Everything else about the build is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("topics", "schemas")  # connector.shipped.Declarations
TARGET = Path("connector", "_shipped")  # connector.shipped.SHIPPED_SUBDIR


class BuildPyWithDeclarations(build_py):
    """``build_py`` that also copies ``topics/`` and ``schemas/`` into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the checkout's own directories
        for name in SHIPPED:
            source = ROOT / name
            if not source.is_dir():
                raise FileNotFoundError(f"{source} is missing: the wheel would ship without it")
            self.copy_tree(str(source), str(Path(self.build_lib) / TARGET / name))


setup(cmdclass={"build_py": BuildPyWithDeclarations})
