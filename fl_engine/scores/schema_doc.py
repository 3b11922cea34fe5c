"""Write docs/schema.md: the schema's fields per use case (etl.schema_doc) with the conventional
scores that read each one (fl_engine.scores.usage).

    python -m fl_engine.scores.schema_doc            # print it
    python -m fl_engine.scores.schema_doc --write    # write docs/schema.md (a test fails when stale)
"""
from __future__ import annotations

import argparse
import sys

from etl.schema_doc import DOC_PATH
from etl.schema_doc import render as render_page

from .usage import used_by


def render() -> str:
    return render_page(used_by)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fl_engine.scores.schema_doc", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help=f"write {DOC_PATH}")
    args = p.parse_args(argv)
    text = render()
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
