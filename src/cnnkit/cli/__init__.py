"""The command line: `cnnkit TASK MODE [options]`. Options become a config, the config one API call.

Every user error is a CnnkitError: one line on stderr and exit code 2; `--debug` anywhere on the
line shows the full traceback instead. Anything else is a bug: exit code 1. Each task's commands live
in its folder (cnnkit/tasks/<task>/cli.py); data.py and tools.py beside this file hold the data and
cross-cutting commands, options.py the apps and the option helpers they all share.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.util import find_spec

from cnnkit import tasks
from cnnkit.cli import data, serve, tools  # noqa: F401 - each registers its commands
from cnnkit.cli.options import app, augment_app, config_command, data_app, pixel_limited, takes_sources  # noqa: F401 - the CLI's API
from cnnkit.errors import CnnkitError
from cnnkit.libwarnings import routed_warnings


def mount_task_commands() -> None:
    """`cnnkit TASK …` for every task of the table whose folder has a cli.py (its typer ``app``); a new task's
    commands need no line here. The instance task has none: Mask R-CNN trains and predicts under `segment`."""
    for name in tasks.TASKS:
        module = f"cnnkit.tasks.{name}.cli"
        if find_spec(f"cnnkit.tasks.{name}") is not None and find_spec(module) is not None:
            app.add_typer(import_module(module).app, name=name)
    # tracking: multi-object tracking owns no weights file (it runs a detector's and an embedder's) and the
    # single-object tracker's (task sot) lives in the same folder, so its commands are mounted by name
    app.add_typer(import_module("cnnkit.tasks.track.cli").app, name="track")
    app.add_typer(data_app, name="data")
    app.add_typer(augment_app, name="augment")


mount_task_commands()

def main() -> None:
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv = [sys.argv[0], *[a for a in sys.argv[1:] if a != "--debug"]]
    try:
        if debug:  # Python's own warnings, whole
            app()
        else:
            with routed_warnings():  # pydicom's, PyTorch's, … as one cnnkit line each, naming the file
                app()
    except CnnkitError as exc:
        if debug:
            raise
        print(f"cnnkit: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("cnnkit: interrupted (a training run continues with --resume)", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for --debug
        if debug:
            raise
        print(f"cnnkit: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and please report it)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
