#!/usr/bin/env python
"""Django's command-line utility for the registry project.

Run from the repository root (``python -m django ...`` with
``DJANGO_SETTINGS_MODULE`` set works too); the project is imported as
``integrations.registry_django``.
"""

import os
import sys
from pathlib import Path


def main() -> None:
    # The project lives inside the ``integrations`` package: make the
    # repository root importable wherever this script is started from.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE", "integrations.registry_django.settings"
    )

    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
