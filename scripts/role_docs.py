#!/usr/bin/env python3
"""Write the roles' configuration tables into README.md from their argument specs.

scripts/role_docs.py           rewrite the section between the role-docs markers
scripts/role_docs.py --check   exit 1 if README.md is out of date (the unit tests run this)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- role-docs:start -->", "<!-- role-docs:end -->"


def cell(text: object) -> str:
    """Argument-spec markup (C(x), I(x)) as Markdown, fit for a table cell."""
    text = " ".join(text) if isinstance(text, list) else str(text)
    text = re.sub(r"[CI]\(([^)]*)\)", r"`\1`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def default(option: dict) -> str:
    if option.get("required"):
        return "**required**"
    value = option.get("default")
    if value in ("", [], {}):
        return "*(empty)*"
    shown = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return f"`{shown}`".replace("|", "\\|")


def role_tables() -> str:
    sections = []
    for spec_file in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        role = spec_file.parents[1].name
        main = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]
        rows = ["| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, option in main["options"].items():
            kind = option.get("type", "str") + (f" of {option['elements']}" if option.get("elements") else "")
            rows.append(f"| `{name}` | {kind} | {default(option)} | {cell(option.get('description', ''))} |")
            for sub, suboption in (option.get("options") or {}).items():
                subkind = suboption.get("type", "str")
                rows.append(
                    f"| &nbsp;&nbsp;`.{sub}` | {subkind} | {default(suboption)} | {cell(suboption['description'])} |"
                )
        sections.append(f"**{role}**: {cell(main['short_description'])}\n\n" + "\n".join(rows))
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
