"""What the listing commands print, kept in a file so that they answer without importing torch.

``triggerlab datasets``, ``models``, ``defenses`` and ``triggers list`` show the
registries: names, summaries, parameters and their defaults. The registries live
beside the code they describe, so reading them imports torch, which takes about
1.9 s in a fresh process on a 2-core machine: longer than a listing may take.

``build_listings()`` reads the registries themselves. ``listings.json``, beside
this module, holds what it returned together with the SHA-256 of every triggerlab
module that building it imported. ``read_listings()`` uses the file only while
those modules are unchanged, and otherwise builds afresh, so a listing is never
stale, only slower. ``python -m triggerlab.catalogue.listings`` (``make listings``, run
by ``make test``) rewrites the file; ``stale()`` says when it is out of date.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from triggerlab.files import write_text_atomic

LISTINGS_FILE = Path(__file__).with_name("listings.json")
PACKAGE_ROOT = Path(__file__).parent


def shown_default(field: Any) -> str:
    """A parameter's default as a user would write it, or ``(required)``."""
    return "(required)" if field.is_required() else repr(field.default)


def spec_parameters(spec: Any) -> list[list[str]]:
    """``[name, default, description]`` of each field of a pydantic spec but its ``kind``."""
    return [
        [name, shown_default(field), field.description or ""]
        for name, field in spec.model_fields.items()
        if name != "kind"
    ]


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def build_listings() -> dict[str, Any]:
    """Every listing's content, read from the registries (imports torch and the catalogues)."""
    from triggerlab.data import DATASETS
    from triggerlab.data.fetch import SOURCES
    from triggerlab.defenses import DEFENSE_KINDS
    from triggerlab.models import MODELS, model_options
    from triggerlab.triggers import TRIGGER_KINDS
    from triggerlab.triggers.colors import NAMED_COLORS
    from triggerlab.triggers.geometry import NAMED_POSITIONS

    def options(values: dict[str, object]) -> str:
        return ", ".join(f"{k}={v}" for k, v in values.items())

    return {
        "datasets": [
            {
                "name": info.name,
                "summary": info.summary,
                "layout": info.layout,
                "options": options(info.options()),
            }
            for info in DATASETS.values()
        ],
        "fetchable": [name for name, src in SOURCES.items() if src.fetchable],
        "models": [{"name": name, "options": options(model_options(name))} for name in MODELS],
        "defenses": [
            {
                "kind": kind,
                "needs": [
                    need
                    for need, flag in (
                        ("held-back clean data", spec.holds_back_data),
                        ("classes", spec.needs_classes),
                    )
                    if flag
                ],
                "parameters": spec_parameters(spec),
            }
            for kind, spec in DEFENSE_KINDS.items()
        ],
        "triggers": [
            {"kind": kind, "summary": first_line(spec.__doc__), "parameters": spec_parameters(spec)}
            for kind, spec in TRIGGER_KINDS.items()
        ],
        "colors": list(NAMED_COLORS),
        "positions": list(NAMED_POSITIONS),
    }


def source_digest(modules: list[str]) -> str | None:
    """SHA-256 over the named modules' source files; None when one of them is gone."""
    digest = hashlib.sha256()
    for module in modules:
        parts = module.split(".")[1:]
        path = PACKAGE_ROOT.joinpath(*parts)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        try:
            digest.update(module.encode() + b"\0" + path.read_bytes())
        except OSError:
            return None
    return digest.hexdigest()


def imported_modules() -> list[str]:
    """The triggerlab modules this process has imported, and this one (which shapes the
    listings even when it runs as ``__main__``), in a stable order."""
    names = {name for name in sys.modules if name.split(".")[0] == "triggerlab"}
    return sorted(names | {"triggerlab.catalogue.listings"})


def listings_document() -> dict[str, Any]:
    """The content of ``listings.json``: call it in a fresh process, which then imports
    exactly the modules the listings depend on."""
    listings = build_listings()
    modules = imported_modules()
    return {"modules": modules, "sha256": source_digest(modules), "listings": listings}


def read_listings(path: Path = LISTINGS_FILE) -> dict[str, Any]:
    """The listings from ``path`` while the modules they came from are unchanged, else afresh."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document["sha256"] == source_digest(document["modules"]):
            return document["listings"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no file, or not one this module wrote: the registries answer
    return build_listings()


def serialise(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def stale() -> str | None:
    """Why ``listings.json`` differs from a fresh build, or None; call it in a fresh process."""
    text = serialise(listings_document())
    current = LISTINGS_FILE.read_text(encoding="utf-8") if LISTINGS_FILE.exists() else ""
    return None if current == text else f"{LISTINGS_FILE} is out of date: run `make listings`"


def main() -> None:
    write_text_atomic(LISTINGS_FILE, serialise(listings_document()))
    print(f"wrote {LISTINGS_FILE}")


if __name__ == "__main__":
    main()
