"""{% inline_static "js/x.js" %}: a static file's text, for standalone HTML downloads that must
work without the server (the served pages load the same file by URL, as the CSP requires)."""
import re
from pathlib import Path

from django import template
from django.contrib.staticfiles import finders
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag
def inline_static(path: str) -> str:
    found = finders.find(path)
    if not found:
        raise template.TemplateSyntaxError(f"inline_static: no static file {path!r}")
    text = Path(found).read_text(encoding="utf-8")
    # "</script" inside a JS string would close the surrounding element; "<\/" reads the same.
    return mark_safe(re.sub(r"</(script)", r"<\\/\1", text, flags=re.IGNORECASE))
