"""jinja2 templates, and the samples a client gets, from inside the package: templates/ and samples/ here are links
to the repository's top-level folders (their only copy); an installed wheel holds the files themselves."""

from __future__ import annotations

from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
SAMPLES_DIR = PACKAGE_DIR / "samples"


def render(name: str, **context) -> str:
    return _environment().get_template(name).render(**context)


@cache
def _environment():
    """One environment per process: it keeps each template compiled, so ALL=true compiles each once, not per client
    (jinja2 still reloads a template whose file changed)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
