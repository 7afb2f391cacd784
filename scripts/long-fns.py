#!/usr/bin/env python3
"""List the functions in src/ longer than a limit (80 lines by default), test code excluded.

Usage: scripts/long-fns.py [--limit N] [--all] [ROOT...]

A function's length runs from the line of its `fn` keyword to the line of its closing brace.
Test code is left out: items under `#[cfg(test)]` (a `mod tests { ... }` block, or the file a
`#[cfg(test)] mod tests;` names). The lexer knows comments, strings, raw strings, chars and
lifetimes, which is enough for brace matching; it is not a Rust parser. Exits 1 when a
function is over the limit, so that it can run as a check.
"""

import argparse
import re
import sys
from pathlib import Path

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokens(text):
    """Yield (kind, value, offset): kind is 'ident', 'punct' or 'attr' (an outer attribute)."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif (m := re.compile(r"b?r(#*)\"").match(text, i)) and (i == 0 or not is_ident(text[i - 1])):
            end = text.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            i = text.index('"', i) + 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.compile(r"'(\\.[^']*|[^\\'])'").match(text, i)
            i = m.end() if m else i + 1
        elif text.startswith("#[", i) or text.startswith("#![", i):
            start = i
            i = text.index("[", i)
            depth = 0
            while i < n:
                if text[i] == "[":
                    depth += 1
                elif text[i] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
            yield "attr", re.sub(r"\s+", "", text[start:i]), start
        elif m := IDENT.match(text, i):
            yield "ident", m.group(), i
            i = m.end()
        else:
            yield "punct", c, i
            i += 1


def is_ident(c):
    return c.isalnum() or c == "_"


def scan(path):
    """Return ([(name, first_line, last_line)] of non-test fns, [test module files])."""
    text = path.read_text()
    line_of = lambda offset: text.count("\n", 0, offset) + 1  # noqa: E731
    toks = list(tokens(text))
    functions, test_files = [], []
    test_until = -1  # token index up to which we are inside #[cfg(test)] code
    k = 0
    while k < len(toks):
        kind, value, offset = toks[k]
        if kind == "attr" and value == "#[cfg(test)]" and k > test_until:
            # The item the attribute is on: up to its `;` or its matching `}`.
            j = k + 1
            while j < len(toks) and toks[j][1] not in ("{", ";"):
                j += 1
            if j < len(toks) and toks[j][1] == ";":
                words = [t[1] for t in toks[k + 1 : j] if t[0] == "ident"]
                if "mod" in words:
                    test_files.append(module_file(path, words[words.index("mod") + 1]))
            test_until = match_brace(toks, j) if j < len(toks) and toks[j][1] == "{" else j
        elif kind == "ident" and value == "fn" and k > test_until:
            if k + 1 < len(toks) and toks[k + 1][0] == "ident":
                j, depth = k + 2, 0
                while j < len(toks):
                    v = toks[j][1]
                    if v in "([":
                        depth += 1
                    elif v in ")]":
                        depth -= 1
                    elif depth == 0 and v in ("{", ";"):
                        break
                    j += 1
                if j < len(toks) and toks[j][1] == "{":
                    end = match_brace(toks, j)
                    functions.append((toks[k + 1][1], line_of(offset), line_of(toks[end][2])))
        k += 1
    return functions, test_files


def match_brace(toks, j):
    depth = 0
    for k in range(j, len(toks)):
        if toks[k][1] == "{":
            depth += 1
        elif toks[k][1] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(toks) - 1


def module_file(path, name):
    # `mod x;` in a.rs or mod.rs/lib.rs/main.rs: x.rs or x/mod.rs beside, or in a/.
    base = path.parent if path.name in ("mod.rs", "lib.rs", "main.rs") else path.with_suffix("")
    for candidate in (base / f"{name}.rs", base / name / "mod.rs"):
        if candidate.exists():
            return candidate.resolve()
    return (base / f"{name}.rs").resolve()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=80)
    parser.add_argument("--all", action="store_true", help="list every function, longest first")
    parser.add_argument("roots", nargs="*", default=["src"])
    args = parser.parse_args()

    files = sorted(p.resolve() for root in args.roots for p in Path(root).rglob("*.rs"))
    results, test_files = [], set()
    for path in files:
        functions, tests = scan(path)
        test_files.update(tests)
        results += [(path, *f) for f in functions]
    cwd = Path.cwd().resolve()
    rows = sorted(
        ((last - first + 1, path, name, first) for path, name, first, last in results if path not in test_files),
        key=lambda r: (-r[0], str(r[1]), r[3]),
    )
    over = [r for r in rows if r[0] > args.limit]
    for length, path, name, first in rows if args.all else over:
        shown = path.relative_to(cwd) if path.is_relative_to(cwd) else path
        print(f"{length:5}  {shown}:{first}  {name}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
