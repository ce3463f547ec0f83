"""Print the requirements an image installs, one per line: pyproject.toml's dependencies plus the
optional-dependency groups named on the command line (``python3 deps.py server serverless``).

The versions come from requirements.lock, given to pip as constraints (``constraints`` writes it
with the extras' brackets dropped, which pip's constraints refuse). Standard library only: it runs
in the image's build stage before anything is installed.
"""

import re
import sys
import tomllib


def requirements(extras: list[str], pyproject: str = "pyproject.toml") -> list[str]:
    """pyproject's dependencies and the named extras' (KeyError for an unknown extra)."""
    project = tomllib.load(open(pyproject, "rb"))["project"]
    out = list(project["dependencies"])
    for extra in extras:
        out += project["optional-dependencies"][extra]
    return out


def constraints(lock: str = "requirements.lock") -> list[str]:
    """requirements.lock's pins without extras (``tritonclient[grpc,http]==X`` -> ``tritonclient==X``)."""
    return [re.sub(r"\[[^]]*\]", "", ln) for ln in open(lock).read().splitlines() if ln and not ln.startswith("#")]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--constraints"]:
        print(*constraints(), sep="\n")
    else:
        print(*requirements(sys.argv[1:]), sep="\n")
