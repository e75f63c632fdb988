"""The command lines that README.md and docs/*.md show are ones the programs accept.

Users copy them. Every ``temposplit ...`` line of a code block (fenced, of no language or a
shell's, or indented) and every inline ``temposplit ...`` code span is parsed by the parser
the ``temposplit`` command itself builds (:func:`temposplit.cli.build_parser`); a
``python -m temposplit.X ...`` line by that module's own ``main``, stopped right after its
``parse_args``; a ``make ...`` line is checked against the Makefile's targets and
variables. Nothing is run. A refusal names the document, the line and the command.

The docs' notation is read so, the same way every time:

- ``# comment`` to the end of the line is dropped; a ``\\`` that ends a line joins the next
  line as the shell does (the next line's indentation separates words); a here-document's
  lines are no commands; ``&&``, ``||``, ``;``, ``&`` and a ``|`` outside brackets (a pipe)
  end a command; ``VAR=value`` words before a command, ``/usr/bin/time [-v]`` and a
  ``$`` prompt are not the command;
- ``[...]`` is optional, ``[a | b]`` either a or b, ``x|y|z`` within a word one of x, y and
  z: every combination is parsed (with and without each optional part; above
  MAX_VARIANTS combinations, each alternative once); ``...`` (more of the same) is dropped;
  ``$(...)`` is a placeholder;
- a placeholder (a word in capitals, with or without a suffix: ``V``, ``N``, ``OUT.npz``,
  ``HxW``) that the option before it does not take as it is becomes a value of that
  option's type (its first choice, ``1``, ``0.5``, ``320x320``); placeholders in a
  command's positions stay as they are (file names);
- an inline span of command words alone names the command (``temposplit decode``, whose
  arguments are not shown): the words must be commands; an inline span that ends in an
  option taking a value names that option (``temposplit eval --video``): the option must
  exist and the rest must parse.

A line shown deliberately partial is listed in PARTIAL with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import itertools
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from temposplit.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKEFILE = ROOT / "Makefile"

MAX_VARIANTS = 256  # a line with more combinations is parsed with each alternative once
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console", "shell-session", "zsh"}  # fenced blocks of commands
MAKE_FLAGS = {"-n", "-k", "-s", "-B", "--dry-run", "--keep-going", "--silent"}

# Lines shown deliberately partial: (document, the command as shown, comments dropped) -> why.
# Each entry must still match a shown command (a stale entry fails the test).
PARTIAL: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Shown:
    """A command as a document shows it."""

    path: Path
    line: int  # its first line, 1-based
    text: str  # as shown: continuation lines joined, comments dropped
    tree: tuple  # its words and notation (see _commands)
    inline: bool  # an inline code span, not a code block's line

    @property
    def doc(self) -> str:
        return self.path.relative_to(ROOT).as_posix() if self.path.is_relative_to(ROOT) else self.path.name

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


# --- reading the documents -----------------------------------------------------------------

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`{]*)")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


def _unindent(line: str, margin: int) -> str:
    return line[min(margin, len(line) - len(line.lstrip(" "))) :]


def _code_and_prose(lines: list[str]) -> tuple[list[tuple[int, int, str]], list[str]]:
    """The shell code lines (block, number, text as shown: the block's margin taken off) of
    fenced blocks of no language or a shell's and of indented blocks, and the prose: the
    lines with every code block's lines blanked."""
    code: list[tuple[int, int, str]] = []
    prose = list(lines)
    fence, shell, after_blank, indented, margin, block = None, False, True, False, 0, 0
    for number, line in enumerate(lines, 1):
        if fence is not None:
            prose[number - 1] = ""
            if re.fullmatch(rf"\s*{re.escape(fence[0])}{{{len(fence)},}}\s*", line):
                fence = None
            elif shell:
                code.append((block, number, _unindent(line, margin)))
            continue
        opened = FENCE.match(line)
        if opened:
            fence, shell = opened.group(1), opened.group(2).lower() in SHELL_BLOCKS
            prose[number - 1], indented, margin = "", False, len(line) - len(line.lstrip(" "))
            block += 1
            continue
        if not line.strip():
            after_blank = True
            continue
        if line.startswith("    ") and (indented or (after_blank and not LIST_ITEM.match(line))):
            if not indented:
                indented, margin = True, len(line) - len(line.lstrip(" "))
                block += 1
            prose[number - 1] = ""
            code.append((block, number, _unindent(line, margin)))
        else:
            indented = False
        after_blank = False
    return code, prose


def _strip_comment(line: str) -> str:
    """The line without its shell comment: from a ``#`` that starts a word, outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _logical_lines(code: list[tuple[int, int, str]]) -> list[tuple[int, str]]:
    """Code lines with comments dropped, continuations joined, here-documents left out."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    heredoc = None
    previous = (None, 0)
    for block, number, raw in code:
        if (block, number - 1) != previous:  # another block, or a blank line: nothing continues
            if pending is not None and pending[1].strip():
                out.append((pending[0], pending[1].strip()))
            pending = None
            heredoc = heredoc if block == previous[0] else None
        previous = (block, number)
        if heredoc is not None:
            if raw.strip() == heredoc:
                heredoc = None
            continue
        line = _strip_comment(raw)
        if pending is None:
            line = re.sub(r"^\s*\$\s+", "", line)  # a shell prompt
        joined = line if pending is None else pending[1] + line
        start = number if pending is None else pending[0]
        match = HEREDOC.search(line)
        if match:
            heredoc = match.group(2)
        if joined.endswith("\\") and not joined.endswith("\\\\"):
            pending = (start, joined[:-1])
        else:
            pending = None
            if joined.strip():
                out.append((start, joined.strip()))
    if pending is not None and pending[1].strip():
        out.append((pending[0], pending[1].strip()))
    return out


SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)


def _inline_spans(prose: list[str]) -> list[tuple[int, str]]:
    """The inline code spans of the prose (number of the line they start on, text), a span
    over several lines joined by spaces as Markdown shows it."""
    spans = []
    paragraph: list[tuple[int, str]] = []
    for number, line in [*enumerate(prose, 1), (len(prose) + 1, "")]:
        if line.strip():
            paragraph.append((number, line))
            continue
        if paragraph:
            text = "\n".join(line for _, line in paragraph)
            starts = list(itertools.accumulate(len(line) + 1 for _, line in paragraph))
            for match in SPAN.finditer(text):
                index = next(i for i, end in enumerate(starts) if match.start() < end)
                content = " ".join(match.group(2).split("\n"))
                spans.append((paragraph[index][0], content.strip()))
        paragraph = []
    return spans


def _tokens(text: str) -> list[str]:
    """Shell words, and ``[``, ``]`` where a group opens or closes, and ``&&``, ``;``..."""
    text = re.sub(r"\$\([^()]*\)", "SUBST", text)  # a command substitution: a placeholder
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    try:
        words = list(lexer)
    except ValueError:  # an unclosed quote: words as written
        words = text.split()
    out: list[str] = []
    depth = 0
    for word in words:
        while word.startswith("["):  # a group opens
            out.append("[")
            depth += 1
            word = word[1:]
        closes = 0
        while word.endswith("]") and depth - closes > 0:  # a group closes (not features[3])
            closes += 1
            word = word[:-1]
        if word.endswith(";") and len(word) > 1:
            out += [word[:-1], ";"]
        elif word:
            out.append(word)
        out += ["]"] * closes
        depth -= closes
    return out


SEPARATORS = {"&&", "||", ";", "&", "|"}


def _commands(text: str) -> list[tuple]:
    """The commands of a line, each a tree: a tuple of words and choices, a choice
    ``("?", optional, alternatives)`` with each alternative a tree."""
    tokens = _tokens(text)
    commands: list[tuple] = []

    def sequence(i: int, depth: int) -> tuple[tuple, int]:
        items: list = []
        while i < len(tokens):
            token = tokens[i]
            if token == "[":
                alternatives, i = group(i + 1, depth + 1)
                items.append(("?", True, alternatives))
                continue
            if token == "]" or (depth and token == "|") or (not depth and token in SEPARATORS):
                break
            if token != "...":
                parts = token.split("|")
                if len(parts) > 1 and all(parts):
                    items.append(("?", False, tuple((part,) for part in parts)))
                else:
                    items.append(token)
            i += 1
        return tuple(items), i

    def group(i: int, depth: int) -> tuple[tuple, int]:
        alternatives = []
        while True:
            items, i = sequence(i, depth)
            alternatives.append(items)
            if i < len(tokens) and tokens[i] == "|":
                i += 1
                continue
            return tuple(alternatives), i + 1  # past the "]" (or the end)

    i = 0
    while i < len(tokens):
        items, i = sequence(i, 0)
        if items:
            commands.append(items)
        i += 1  # past the separator
    return commands


def variants(tree: tuple) -> list[list[str]]:
    """Every way of writing the command the notation allows (each alternative once where
    there are more than MAX_VARIANTS)."""
    parts: list[list[list[str]]] = []
    for item in tree:
        if isinstance(item, str):
            parts.append([[item]])
            continue
        _, optional, alternatives = item
        choices = [words for alternative in alternatives for words in variants(alternative)]
        parts.append(([[]] if optional else []) + choices)
    if math.prod(len(part) for part in parts) <= MAX_VARIANTS:
        return [[word for chosen in combination for word in chosen] for combination in itertools.product(*parts)]
    first = [part[0] for part in parts]
    out = [[word for chosen in first for word in chosen]]
    for index, part in enumerate(parts):
        for choice in part[1:]:
            combination = first[:index] + [choice] + first[index + 1 :]
            out.append([word for chosen in combination for word in chosen])
    return out


def _program(tree: tuple) -> tuple[str, str, tuple] | None:
    """("temposplit" | "module" | "make", module name or "", the arguments' tree), or None
    where the tree is no command of ours."""
    words = list(tree)
    while words and isinstance(words[0], str) and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
        words.pop(0)  # VAR=value before the command
    if words and words[0] in ("/usr/bin/time", "time"):
        words.pop(0)
        while words and isinstance(words[0], str) and words[0] in ("-v", "-p"):
            words.pop(0)
    if not words or not isinstance(words[0], str):
        return None
    first = words[0]
    if re.fullmatch(r"(?:\S*/bin/)?temposplit", first):
        return "temposplit", "", tuple(words[1:])
    if re.fullmatch(r"g?make", first):
        return "make", "", tuple(words[1:])
    if (
        re.fullmatch(r"(?:\S*/)?python(?:3(?:\.\d+)?)?", first)
        and len(words) > 2
        and words[1] == "-m"
        and isinstance(words[2], str)
        and re.fullmatch(r"temposplit(?:\.\w+)*", words[2])
    ):
        return "module", words[2], tuple(words[3:])
    return None


def _text(tree: tuple) -> str:
    def show(item) -> str:
        if isinstance(item, str):
            return item
        _, optional, alternatives = item
        inner = " | ".join(" ".join(show(i) for i in alternative) for alternative in alternatives)
        return f"[{inner}]" if optional else "|".join(" ".join(show(i) for i in a) for a in alternatives)

    return " ".join(show(item) for item in tree)


def documented_commands(path: Path) -> list[Shown]:
    """The commands of ours (temposplit, python -m temposplit..., make) a document shows."""
    lines = path.read_text(encoding="utf-8").split("\n")
    code, prose = _code_and_prose(lines)
    found = []
    for inline, pieces in ((False, _logical_lines(code)), (True, _inline_spans(prose))):
        for number, text in pieces:
            commands = _commands(_strip_comment(text) if inline else text)
            if inline and (not commands or _program(commands[0]) is None):
                continue  # a span is a command only where it starts with one
            found += [Shown(path, number, _text(tree), tree, inline) for tree in commands if _program(tree)]
    return sorted(found, key=lambda shown: shown.line)


# --- checking them ----------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"(?:[A-Z][A-Z0-9_]*|[A-Z]x[A-Z])(?:\.[a-z0-9]+)?")


class _Parsed(Exception):
    """Raised in place of returning from parse_args: the module's main stops there."""


def _action(parser: argparse.ArgumentParser, option: str):
    return parser._option_string_actions.get(option.split("=", 1)[0])


def _accepts(action, value: str) -> bool:
    try:
        converted = action.type(value) if callable(action.type) else value
    except Exception:  # the type's refusal, whatever it raises
        return False
    return action.choices is None or converted in action.choices


def _filled(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The words with each placeholder an option does not take as it is made a value it does."""
    out = list(words)
    option = None
    for i, word in enumerate(words):
        if word.startswith("-") and len(word) > 1:
            option = _action(parser, word)
            if option is not None and "=" in word:
                name, value = word.split("=", 1)
                if PLACEHOLDER.fullmatch(value):
                    out[i] = f"{name}={_sample(option, value)}"
                option = None
            continue
        if option is not None and option.nargs != 0 and PLACEHOLDER.fullmatch(word):
            out[i] = _sample(option, word)
    return out


def _sample(action, placeholder: str) -> str:
    candidates = [placeholder, *(str(c) for c in action.choices or ()), "1", "0.5", "320x320"]
    return next((c for c in candidates if _accepts(action, c)), placeholder)


def _parse_error(parse, *args) -> str | None:
    """argparse's complaint, or None where it accepts (``--help`` included)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse(*args)
    except SystemExit as exc:
        if exc.code not in (0, None):
            lines = [line for line in err.getvalue().splitlines() if line.strip()]
            return lines[-1].strip() if lines else f"exit status {exc.code}"  # the error, not the usage
    except _Parsed:
        raise
    except Exception as exc:  # an option's type that raises what argparse does not catch
        return f"{type(exc).__name__} while parsing: {exc}"
    return None


def _subparsers(parser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _command_parser(parser, words: list[str]) -> tuple[argparse.ArgumentParser, int]:
    """The (sub-)command parser the leading words choose, and how many words they are."""
    used = 0
    while used < len(words):
        sub = _subparsers(parser)
        if sub is None or words[used] not in sub.choices:
            break
        parser = sub.choices[words[used]]
        used += 1
    return parser, used


def _check_words(parser, words: list[str], inline: bool, parse) -> str | None:
    """Whether ``parse`` (parser's own, or the module's patched one) accepts the words."""
    command, used = _command_parser(parser, words)
    if inline and used == len(words):  # command words alone: names the command (`temposplit decode`)
        return None
    if inline and words and re.match(r"--?[A-Za-z]", words[-1]):  # names an option
        action = _action(command, words[-1])
        if action is None:
            return f"{command.prog} has no option {words[-1]}"
        if action.nargs != 0 and "=" not in words[-1]:
            words = words[:-1]
    return _parse_error(parse, _filled(command, words))


@functools.cache
def _temposplit_parser() -> argparse.ArgumentParser:
    return build_parser()


@functools.cache
def _makefile() -> tuple[frozenset[str], frozenset[str]]:
    """The Makefile's targets and variables."""
    text = MAKEFILE.read_text(encoding="utf-8")
    targets, variables = set(), set(re.findall(r"\$\(([A-Za-z_]\w*)\)", text))
    for line in text.split("\n"):
        if line.startswith("\t") or line.lstrip().startswith("#"):
            continue
        assigned = re.match(r"\s*(?:export\s+)?([A-Za-z_]\w*)\s*(?:\?|:|::|\+|!)?=", line)
        if assigned:
            variables.add(assigned.group(1))
            continue
        rule = re.match(r"([^:=#]+?)\s*::?(?!=)", line)
        if rule:
            targets.update(name for name in rule.group(1).split() if "$" not in name and name != ".PHONY")
    return frozenset(targets), frozenset(variables)


def _make_error(words: list[str]) -> str | None:
    targets, variables = _makefile()
    errors = []
    for word in words:
        if re.fullmatch(r"[A-Za-z_]\w*=.*", word):
            if word.split("=", 1)[0] not in variables:
                errors.append(f"{word.split('=', 1)[0]} is no variable of the Makefile")
        elif word.startswith("-"):
            if word not in MAKE_FLAGS:
                errors.append(f"make has no option {word} (make refuses it)")
        elif word not in targets:
            errors.append(f"the Makefile has no target {word!r}")
    return "; ".join(errors) or None


CLI_MODULES = {"temposplit", "temposplit.__main__", "temposplit.cli"}  # `python -m` of these is `temposplit`


def _module_error(module: str, words: list[str], inline: bool) -> str | None:
    """What ``python -m module words`` says to its words: its ``main(argv)`` is called with
    argparse's parse_args patched to check the words and stop there; any other way to
    parse (which would go on to run the command) is stopped and reported."""
    if module in CLI_MODULES:
        parser = _temposplit_parser()
        return _check_words(parser, words, inline, parser.parse_args)
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return f"no module {module}"
    if inline and not words:  # names the module
        return None
    main = getattr(importlib.import_module(module), "main", None)
    if main is None:
        return f"{module} has no main(argv) to check the options against"
    parse_args, parse_known_args = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    outcome: list[str | None] = []
    parsing = []

    def parse_and_stop(self, args=None, namespace=None):
        parsing.append(True)
        outcome.append(_check_words(self, list(args or []), inline, lambda a: parse_args(self, a, namespace)))
        raise _Parsed

    def only_through_parse_args(self, args=None, namespace=None):
        if not parsing:
            raise _Parsed  # outcome stays empty: reported below
        return parse_known_args(self, args, namespace)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_and_stop),
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", only_through_parse_args),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        try:
            main(list(words))
        except _Parsed:
            pass
        except SystemExit as exc:  # the module refused before it parsed
            return f"{module} exits with status {exc.code} before it parses its arguments"
    if not outcome:
        return f"{module}'s main(argv) does not parse its arguments with ArgumentParser.parse_args: not checked"
    return outcome[0]


def problems(shown: Shown) -> list[str]:
    """What the programs say to the command: one line per complaint, naming file:line."""
    if (shown.doc, shown.text) in PARTIAL:
        return []
    kind, module, tree = _program(shown.tree)
    complaints: dict[str, list[str]] = {}
    for words in variants(tree):
        if kind == "make":
            error = _make_error(words)
        elif kind == "module":
            error = _module_error(module, words, shown.inline)
        else:
            parser = _temposplit_parser()
            error = _check_words(parser, words, shown.inline, parser.parse_args)
        if error is not None:
            program = {"make": "make", "module": f"python -m {module}", "temposplit": "temposplit"}[kind]
            complaints.setdefault(error, [program, *words])
    lines = []
    for error, argv in complaints.items():
        parsed = " ".join(argv)
        lines.append(
            f"{shown.where}: `{shown.text}`" + (f" (as `{parsed}`)" if parsed != shown.text else "") + f": {error}"
        )
    return lines


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_documented_commands_are_accepted(doc):
    refused = [line for shown in documented_commands(doc) for line in problems(shown)]
    assert not refused, f"{len(refused)} documented command(s) refused:\n" + "\n".join(refused)


def test_partial_lines_are_still_shown():
    shown = {(s.doc, s.text) for doc in DOCS for s in documented_commands(doc)}
    stale = [f"{doc}: {text}" for doc, text in PARTIAL if (doc, text) not in shown]
    assert not stale, "PARTIAL lists lines no document shows any more:\n" + "\n".join(stale)


def _shown(tmp_path, text: str) -> list[str]:
    doc = tmp_path / "example.md"
    doc.write_text(text, encoding="utf-8")
    return [line for shown in documented_commands(doc) for line in problems(shown)]


def test_the_notation_gives_every_combination():
    (tree,) = _commands("temposplit demo [--frames 120] [--bits 4 | --rate 0.1] --coder huffman|ctx [--video V ...]")
    assert sorted(" ".join(words) for words in variants(tree)) == sorted(
        f"temposplit demo{frames}{bits} --coder {coder}{video}"
        for frames in ("", " --frames 120")
        for bits in ("", " --bits 4", " --rate 0.1")
        for coder in ("huffman", "ctx")
        for video in ("", " --video V")
    )
    assert [_text(t) for t in _commands("A=1 temposplit serve --port 7301 & temposplit edge x | head -1")] == [
        "A=1 temposplit serve --port 7301",
        "temposplit edge x",
        "head -1",
    ]


def test_a_refused_line_is_named_by_file_and_line(tmp_path):
    """The check can fail: an unknown option, value or target is reported where it is shown."""
    refused = _shown(
        tmp_path,
        "# Example\n\n```\n"
        "temposplit demo [--frames 12] --bogus-option   # a comment\n"
        "temposplit edge v.mp4 --backend golden|nope \\\n"
        "    --stream cam1\n"
        "make demo no-such-target\n"
        "python -m temposplit.hw.synth --seed N --no-such-option\n"
        "```\n\n"
        "Inline, `temposplit eval --no-such-flag` and `temposplit models no-such-command`.\n\n"
        "    temposplit decode a.tsp b.npz c.npz\n",
    )
    expected = [
        "example.md:4: `temposplit demo [--frames 12] --bogus-option` (as `temposplit demo --bogus-option`): "
        "temposplit demo: error: unrecognized arguments: --bogus-option",
        "example.md:5: `temposplit edge v.mp4 --backend golden|nope --stream cam1` (as `temposplit edge v.mp4 "
        "--backend nope --stream cam1`): temposplit edge: error: argument --backend: invalid choice: 'nope'",
        "example.md:7: `make demo no-such-target`: the Makefile has no target 'no-such-target'",
        "example.md:8: `python -m temposplit.hw.synth --seed N --no-such-option`: python -m temposplit.hw.synth: "
        "error: unrecognized arguments: --no-such-option",
        "example.md:11: `temposplit eval --no-such-flag`: temposplit eval has no option --no-such-flag",
        "example.md:11: `temposplit models no-such-command`: temposplit models: error: argument SUBCOMMAND: "
        "invalid choice: 'no-such-command'",
        "example.md:13: `temposplit decode a.tsp b.npz c.npz`: temposplit decode: error: unrecognized arguments: c.npz",
    ]
    assert len(refused) == len(expected), "\n".join(refused)
    for line, start in zip(refused, expected, strict=True):
        assert line.startswith(start), line


def test_prose_and_other_programs_are_not_commands(tmp_path):
    refused = _shown(
        tmp_path,
        "temposplit cuts the detector; `make` it so, and make no-target of it.\n\n"
        "```python\ntemposplit --nope\n```\n\n"
        "```\npython - <<'EOF'\ntemposplit --nope\nEOF\nhaproxy -f x.cfg --nope\n```\n\n"
        "Named, not run: `temposplit eval --video` (the option), `temposplit features` (the command), "
        "`~/.cache/temposplit`, `temposplit models accuracy --video V --frames N --method M`.\n",
    )
    assert refused == []
