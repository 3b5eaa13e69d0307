"""Print the requirements declared in setup.cfg, one per line (with --test, the test extra too).

The scripts install dependencies from this list rather than building the project as
a package: it runs from its folder.
"""
import configparser
import sys
from pathlib import Path

cfg = configparser.ConfigParser()
cfg.read(Path(__file__).resolve().parent.parent / "setup.cfg")
lines = cfg["options"]["install_requires"].split()
if "--test" in sys.argv:
    lines += cfg["options.extras_require"]["test"].split()
print("\n".join(line for line in lines if line))
