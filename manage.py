#!/usr/bin/env python
"""Django's command-line utility for the FedHaem portal."""
import os
import sys


def main() -> None:
    os.umask(0o077)  # var/ stays private: see portal.core.private_files
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
