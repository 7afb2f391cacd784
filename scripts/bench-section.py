#!/usr/bin/env python3
"""Replaces a "## " section of BENCHMARKS.md (up to the next "## ") with the
given text, or appends it; the section is named by the text's first line."""
import re
import sys

path, section = sys.argv[1], open(sys.argv[2]).read().rstrip() + "\n"
heading = section.splitlines()[0]
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmarks\n"
pattern = re.compile(r"^" + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
