#!/usr/bin/env python3
"""Write the roles' configuration tables into README.md: types and meanings from each role's
meta/argument_specs.yml, defaults from its defaults/main.yml (the kit's own defaults resolved from
src/celerykit/defaults.py, where those roles' defaults come from).

scripts/role_docs.py           rewrite the section between the role-docs markers
scripts/role_docs.py --check   exit 1 if README.md is out of date (the unit tests run this)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from celerykit import defaults as kit  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- role-docs:start -->", "<!-- role-docs:end -->"
KIT_DEFAULT = re.compile(r"^\{\{ lookup\('celerykit\.platform\.kit_default', '(\w+)'\) \}\}$")


def cell(text: object) -> str:
    """Argument-spec markup (C(x), I(x)) as Markdown, fit for a table cell."""
    text = " ".join(text) if isinstance(text, list) else str(text)
    text = re.sub(r"[CI]\(([^)]*)\)", r"`\1`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def effective(value: object) -> object:
    """A role default as it applies: a kit default looked up is shown with its value."""
    if isinstance(value, str) and (match := KIT_DEFAULT.match(value.strip())):
        return kit.as_dict()[match.group(1)]
    return value


def shown(value: object, required: bool = False) -> str:
    if required:
        return "**required**"
    if value in ("", [], {}, None):
        return "*(empty)*"
    if isinstance(value, str) and "{{" in value:
        return "*(derived: see meaning)*"
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{' '.join(str(text).split())}`".replace("|", "\\|")


def rows(role: Path) -> list[str]:
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    values = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    table = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, option in options.items():
        kind = option.get("type", "str") + (f" of {option['elements']}" if option.get("elements") else "")
        value = shown(effective(values.get(name)), option.get("required", False))
        table.append(f"| `{name}` | {kind} | {value} | {cell(option.get('description', ''))} |")
        for sub, suboption in (option.get("options") or {}).items():
            subvalue = shown(
                kit.POOL.get(sub, [] if suboption.get("type") == "list" else None), suboption.get("required")
            )
            kind, meaning = suboption.get("type", "str"), cell(suboption["description"])
            table.append(f"| &nbsp;&nbsp;`.{sub}` | {kind} | {subvalue} | {meaning} |")
    return table


def role_tables() -> str:
    sections = []
    for role in sorted(p.parents[1] for p in ROOT.glob("roles/*/meta/argument_specs.yml")):
        main = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]
        title = f"**celerykit.platform.{role.name}**: {cell(main['short_description'])}"
        sections.append(title + "\n\n" + "\n".join(rows(role)))
    return "\n\n".join(sections)


def main() -> int:
    text = README.read_text()
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    updated = f"{before}{START}\n{role_tables()}\n{END}{after}"
    if "--check" in sys.argv[1:]:
        if updated != text:
            print("README.md's role tables are out of date: run scripts/role_docs.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
