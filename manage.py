#!/usr/bin/env python
"""Django's command-line utility for GitOps Portal."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gitopsportal.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.conf import settings
        from django.core.management import execute_from_command_line

        settings.INSTALLED_APPS  # noqa: B018 - load settings now so a bad variable fails here
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # One clear line naming the variable, not a traceback.
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
