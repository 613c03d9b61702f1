"""The documentation is true to the code: generated pages are current, every keraspec
command shown in the README and docs/ parses against the real CLI, and every link between
the pages leads somewhere."""

import pathlib
import re
import shlex

import pytest
import typer
from typer.exceptions import TyperException

from compiler.cli import app
from compiler.cli.reference import pages

from conftest import ROOT

DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
GROUP = typer.main.get_command(app)
_SHELL = re.compile(r"[|&;<>]+")


def _commands(text):
    """(kind, argv after `keraspec`) of each command in a page: "code" for those in code
    blocks (concrete, run as written), "usage" for inline ones (may hold placeholders and
    [optional] parts)."""
    found, code, fence = [], [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
        elif fence:
            code.append(line)
        else:
            for span in re.findall(r"`(keraspec [^`]+)`", line):
                words = [w for w in re.sub(r"[\[\]]", " ", span).split() if w not in ("...", "…")]
                # A|B alternatives: the first stands for all.
                found.append(("usage", [w.split("|")[0] if "|" in w else w for w in words][1:]))
    for line in "\n".join(code).replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if "keraspec" not in line:
            continue
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        segment = []
        for token in list(lexer) + [";"]:
            if not _SHELL.fullmatch(token):
                segment.append(token)
                continue
            while segment and re.fullmatch(r"[A-Z_]+=\S*", segment[0]):
                segment.pop(0)  # VAR=value before the command
            if segment and pathlib.PurePath(segment[0]).name == "keraspec":
                found.append(("code", segment[1:]))
            segment = []
    return found


def _parse(kind, argv):
    """Parse argv as the CLI would: code strictly (types converted, required options
    present), usage structurally (known options, their arity, the number of arguments)."""
    args = list(argv)
    while args and args[0].startswith("-"):  # global options before the command
        option = args.pop(0)
        (param,) = [p for p in GROUP.params if option in p.opts]
        if not getattr(param, "is_flag", False) and "=" not in option:
            args.pop(0)
    if not args:
        return
    name, rest = args[0], args[1:]
    assert name in GROUP.commands, f"no command {name!r}"
    command = GROUP.commands[name]
    if kind == "code":
        command.make_context(name, rest)  # raises on any usage error
        return
    context = command.context_class(command, info_name=name)
    _, leftover, _ = command.make_parser(context).parse_args(rest)
    assert leftover == [], f"more arguments than {name} takes: {leftover}"


def _shown():
    return [
        pytest.param(kind, argv, id=f"{page.name}: keraspec {' '.join(argv)}"[:120])
        for page in DOCS
        if page.name != "cli.md"  # generated from the CLI itself
        for kind, argv in _commands(page.read_text())
    ]


@pytest.mark.parametrize("path", sorted(pages()))
def test_generated_pages_are_current(path):
    assert (ROOT / path).read_text() == pages()[
        path
    ], f"{path} is stale: run `python -m compiler.cli.reference`"


def test_the_pages_show_commands_of_every_kind():
    shown = _shown()
    assert len(shown) > 40
    assert {p.values[0] for p in shown} == {"code", "usage"}
    # The README's first command runs the main job through five subcommands.
    readme = [argv[0] for kind, argv in _commands((ROOT / "README.md").read_text())]
    assert {"validate", "train", "export", "generate", "evaluate"} <= set(readme)


@pytest.mark.parametrize("kind, argv", _shown())
def test_every_command_shown_parses_against_the_cli(kind, argv):
    _parse(kind, argv)


@pytest.mark.parametrize(
    "kind, argv",
    [
        ("code", ["train", "s.yaml", "--data", "c.csv", "-o", "r", "--epochs", "many"]),
        ("code", ["train", "s.yaml", "-o", "r"]),  # --data is required
        ("usage", ["train", "SPEC", "--bogus"]),
        ("usage", ["diff", "OLD", "NEW", "THIRD"]),
        ("usage", ["export", "RUN_DIR", "-o"]),
        ("usage", ["serve", "RUN_DIR"]),
    ],
)
def test_a_command_the_cli_refuses_fails_the_check(kind, argv):
    with pytest.raises((TyperException, AssertionError)):
        _parse(kind, argv)


def _anchors(text):
    """GitHub's anchors of a page's headings."""
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, flags=re.M)
    }


def test_links_between_pages_lead_to_a_page_and_heading():
    broken = []
    for page in DOCS:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
