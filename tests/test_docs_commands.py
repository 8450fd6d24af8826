"""The `zv-ray` commands shown in README.md and docs/*.md must parse against the real CLI.

Commands in the docs drifted from the CLI before (renamed options, removed flags, configs that moved), and
nothing caught it: a reader copying a command got a usage error. This test pulls every `zv-ray ...` command
out of the docs (fenced code blocks, inline code, the entrypoint after `ray job submit ... --`) and hands its
arguments to the CLI's parser with `make_context`, which converts and validates every parameter but never
calls the command, so nothing runs: no Ray, no network. An unknown option, a missing required argument, a bad
value or a `configs/*.yaml` that does not exist fails, naming the file, the line and the command.

How the docs are read:
- Placeholders (upper-case words such as DIR, CKPT, C.json, IMGS..., and `...`) stand for a value the reader
  picks: string and path parameters get them as they are, numeric ones the smallest number they accept.
- `[--opt v]` optional groups are read without their brackets; `A | B`, and inline `` `A` / `B` `` runs, are
  separate commands, a part without `zv-ray` (`--dataset DIR`, `G.ply`) continuing the command before it.
- Code blocks, and inline code that is all of a table row's first cell (the usage table), are whole
  commands. Inline code in running text may name just a command or one of its options (`zv-ray eval
  --zeroverse N`): what it leaves out of the required parameters is filled with placeholders; what it does
  say must still parse.
"""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from conftest import REPO

from zv_ray.cli import app

try:  # typer >= 0.2x carries its own click: its parse errors derive from TyperException
    from typer import TyperException as ParseError
except ImportError:  # older typer runs on click
    from click import ClickException as ParseError

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SUBCOMMANDS = ["generate", "dataset", "export", "train", "sweep", "compare", "eval", "reconstruct", "view", "doctor", "audit", "demo"]

# A `zv-ray` command at the start of a shell segment (after VAR=value assignments) or after `ray job submit ... --`.
COMMAND = re.compile(r"(?:^|\s--\s+)((?:\w+=\S*\s+)*(?:\.venv/bin/)?zv-ray(?:\s.*)?)$")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:\.[a-z]+)?)?(?:\.\.\.)?$")  # DIR, C.json, IMGS..., ...


def snippets(text: str):
    """(line number, shell text, whole command?) for each code line (continuations joined) and inline code run."""
    fenced, pending, start = False, "", None
    for no, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced and line.rstrip().endswith("\\"):
            pending, start = pending + line.rstrip()[:-1] + " ", start or no
        elif fenced:
            yield start or no, pending + line, True
            pending, start = "", None
        else:  # a run of `a` / `b` spans is one command and its alternatives
            for run in re.finditer(r"`[^`]+`(?:\s*/\s*`[^`]+`)*", line):
                usage_cell = line[: run.start()].strip() == "|" and line[run.end():].lstrip().startswith("|")
                yield no, " | ".join(re.findall(r"`([^`]+)`", run.group())), usage_cell


def commands_in(snippet: str) -> list[list[str]]:
    """The argument lists (subcommand first) of the zv-ray commands in one snippet of shell."""
    snippet = re.sub(r"\[(-[^\]]*)\]", r"\1", snippet)  # [--views 32 --res 512] -> --views 32 --res 512
    found = []
    for segment in re.split(r"\s*(?:&&|;)\s*", snippet):
        match = COMMAND.search(segment)
        if not match:
            continue
        alternatives = [[]]
        for token in shlex.split(match.group(1), comments=True):
            alternatives.append([]) if token == "|" else alternatives[-1].append(token)
        for tokens in alternatives:
            while tokens and re.match(r"\w+=", tokens[0]):
                tokens.pop(0)
            if tokens and tokens[0].removeprefix(".venv/bin/") == "zv-ray":
                found.append(tokens[1:])
            elif tokens and found and found[-1]:  # `zv-ray view --generate N` / `--dataset DIR`
                found.append([found[-1][0], *tokens])
    return [args for args in found if args]


def doc_commands():
    for path in DOCS:
        for no, snippet, whole in snippets(path.read_text()):
            for args in commands_in(snippet):
                yield pytest.param(f"{path.relative_to(REPO)}:{no}", args, whole, id=" ".join(args)[:60])


COMMANDS = list(doc_commands())


@pytest.fixture(scope="module")
def cli():
    group = typer.main.get_command(app)  # a fresh command tree: changing it leaves `app` alone

    def must_not_run(*args, **kwargs):
        raise AssertionError("the docs test ran a command: it may only parse")

    for sub in group.commands.values():
        sub.callback = must_not_run
    return group


def smallest_number(param):
    """The smallest number a numeric parameter accepts (1 when unbounded); None when it takes no number."""
    try:  # typer's own click
        kind, low = param.type_descriptor.annotation, param.min
    except AttributeError:  # click: INT, FLOAT, IntRange, FloatRange
        kind = {"integer": int, "float": float}.get(param.type.name.split()[0])
        low = getattr(param.type, "min", None)
    return None if kind not in (int, float) else 1 if low is None else low


def resolve_placeholders(sub, args: list[str]) -> list[str]:
    """A placeholder given to a numeric option becomes the smallest number it accepts; others stay as they are."""
    numbers = {opt: smallest_number(p) for p in sub.params for opt in p.opts}
    return [str(numbers[prev]) if numbers.get(prev) is not None and PLACEHOLDER.match(arg) else arg
            for prev, arg in zip(["", *args], args)]


def fill_required(sub, args: list[str]) -> list[str]:
    """A mention in running text: required options it leaves out, and required arguments if it gives no
    arguments at all, become placeholders."""
    filled = list(args)
    for p in sub.params:
        if p.required and p.param_type_name == "option" and not set(p.opts) & set(args):
            filled += [p.opts[0], p.name.upper()]
        elif p.required and p.param_type_name == "argument" and not args:
            filled.append(p.name.upper())
    return filled


@pytest.mark.parametrize("where,args,whole", COMMANDS)
def test_doc_command_parses(cli, where, args, whole):
    shown = "zv-ray " + " ".join(args)
    name, rest = args[0], args[1:]
    if name not in cli.commands:
        pytest.fail(f"{where}: `{shown}`: no such command {name!r} (have {', '.join(sorted(cli.commands))})")
    for token in rest:
        value = token.split("=")[-1]
        if value.startswith("configs/") and value.endswith((".yaml", ".yml")) and not (REPO / value).is_file():
            pytest.fail(f"{where}: `{shown}`: {value} does not exist")
    sub = cli.commands[name]
    try:
        sub.make_context(name, resolve_placeholders(sub, rest if whole else fill_required(sub, rest)))
    except ParseError as err:
        pytest.fail(f"{where}: `{shown}`: {err.format_message()}")


def test_docs_show_every_command():
    assert len(COMMANDS) >= 15, f"only {len(COMMANDS)} zv-ray commands found in the docs: is the extractor broken?"
    shown = {param.values[1][0] for param in COMMANDS}
    assert not set(SUBCOMMANDS) - shown, f"commands never shown in README.md or docs/*.md: {set(SUBCOMMANDS) - shown}"
