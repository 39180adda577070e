"""jinja2 templates, and the samples a client gets, from inside the package: templates/ and samples/ here are links
to the repository's top-level folders (their only copy); an installed wheel holds the files themselves."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
SAMPLES_DIR = PACKAGE_DIR / "samples"


def render(name: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(name).render(**context)
