"""Generate the reference pages at build time (mkdocs-gen-files runs this on every build):

- ``reference/cli.md`` from the Typer app itself (every command, its arguments and options);
- ``reference/settings.md`` from :class:`shopml.settings.Settings` (every setting, its
  environment variable, type, default and description).

Nothing is written to the source tree: the pages cannot fall behind the code.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any

import mkdocs_gen_files
import typer

from shopml.cli import app
from shopml.settings import Settings

DOCS = Path(__file__).resolve().parent


def _cell(text: Any) -> str:
    """A markdown table cell: one line, pipes escaped, and outside code spans ``<`` and ``>``
    escaped (``<home>`` is text, not a tag)."""
    parts = re.sub(r"\s+", " ", str(text)).strip().split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def _command(path: list[str], cmd: Any, ctx: Any) -> list[str]:
    """One command's section: its help, usage and a row per argument and option, each as
    ``--help`` prints it (Typer carries its own copy of click: read through its methods)."""
    name = " ".join(path)
    lines = [f"## `{name}`", ""]
    help_text = inspect.cleandoc(cmd.help or "")
    if help_text:
        lines += [help_text, ""]
    pieces = cmd.collect_usage_pieces(ctx)
    lines += ["```text", f"{name} {' '.join(pieces)}".rstrip(), "```", ""]
    records = [
        record
        for p in cmd.params
        if not getattr(p, "hidden", False) and (record := p.get_help_record(ctx)) is not None
    ]
    if records:
        lines += ["| argument or option | what |", "| --- | --- |"]
        for label, what in records:
            lines.append(f"| {_cell(f'`{label}`')} | {_cell(what)} |")
        lines.append("")
    return lines


def cli_reference() -> str:
    root = typer.main.get_command(app)
    out = [
        "# CLI reference",
        "",
        "Generated from the `shopml` command itself at every docs build; `shopml COMMAND --help`"
        " prints the same. Commands that print tables take `--json`; errors a user can cause "
        "print one line and exit with code 2.",
        "",
        inspect.cleandoc(root.help or ""),
        "",
    ]

    def walk(path: list[str], cmd: Any, parent: Any) -> None:
        ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent)
        if hasattr(cmd, "list_commands"):
            for sub in cmd.list_commands(ctx):
                child = cmd.get_command(ctx, sub)
                if child is not None and not child.hidden:
                    walk([*path, sub], child, ctx)
        else:
            out.extend(_command(path, cmd, ctx))

    walk(["shopml"], root, None)
    return "\n".join(out).rstrip() + "\n"


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(f"`{v}`" for v in typing.get_args(annotation))
    text = str(annotation) if typing.get_origin(annotation) else annotation.__name__
    return (
        text.replace("typing.", "")
        .replace("pathlib.", "")
        .replace("pydantic.types.", "")
        .replace("NoneType", "None")
    )


def settings_reference() -> str:
    prefix = Settings.model_config.get("env_prefix", "")
    out = [
        "# Settings reference",
        "",
        "Generated from shopml's one settings class at every docs build. Each setting is read, "
        "highest priority first, from its `SHOPML_*` environment variable, a `.env` file, and "
        "`shopml.toml` in the working directory (or the file `SHOPML_CONFIG` names; the key is "
        "the setting's name in lower case). `shopml config` prints the values in effect; "
        "lists and mappings are given as JSON.",
        "",
        "| environment variable | type | default | what |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        env = f"{prefix}{name}".upper()
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            made = field.default_factory()  # type: ignore[call-arg]
            default = f"`{made}`" if made not in ([], {}, ()) else "empty"
        elif field.default is None:
            default = ""
        else:
            value = field.default
            default = f"`{value}`" if value != "" else "empty"
        out.append(
            f"| `{env}` | {_cell(_type_name(field.annotation))} | {_cell(default)} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(out) + "\n"


with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(cli_reference())
with mkdocs_gen_files.open("reference/settings.md", "w") as f:
    f.write(settings_reference())
