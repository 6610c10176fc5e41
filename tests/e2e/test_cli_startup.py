"""Commands start without importing what they do not use: `--version` and `-h` load neither torch nor the store,
the store commands load no torch, and `-h` lists every command with the first line of its own help."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

HEAVY = ("torch", "torchvision", "open_clip", "zarr", "h5py", "av", "transformers", "matplotlib", "scipy")


def modules_after(args: list[str]) -> list[str]:
    code = (f"import json, sys\nfrom freezeframe.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args, allowed", [
    (["--version"], []), (["-h"], []), (["rm", "-h"], []), (["verify", "-h"], []),
    (["inspect", "no-such-store"], ["h5py", "zarr"]),
])
def test_commands_import_only_what_they_use(args, allowed):
    assert set(modules_after(args)) <= set(allowed)


def test_help_lists_every_command_with_its_own_first_line(run_cli):
    from freezeframe.cli.group import COMMAND_MODULES, command_docstrings, main

    listing = run_cli("-h").output
    docs = command_docstrings()
    assert set(docs) == set(COMMAND_MODULES)
    for name in COMMAND_MODULES:
        command = main.get_command(None, name)  # imports its module
        first_line = click.Command(name, help=docs[name]).get_short_help_str(200)
        assert command is not None and first_line == command.get_short_help_str(200), name
        assert f"  {name} " in listing, name
