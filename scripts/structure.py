#!/usr/bin/env python3
"""Prints the structure figures of issue 15: the import circles of every crate and the files over
600 lines.

Circles are looked for at two levels, because both confuse a reader: between the top-level modules
of a crate (`config` uses `pgwire` and `pgwire` uses `config`), and between sibling files of one
folder (`snapshot.rs` uses `snapshot_sweep.rs` and back). A module's use of its own ancestors
(`super::`) is not a circle: a parent owns its children.

Usage: scripts/structure.py [ROOT]   (exit status 0; this is a report, not a gate)
"""

import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH_RE = re.compile(r"\b(crate|super)((?:::" + IDENT + r")+)")
USE_RE = re.compile(r"\buse\s+(crate|super)::\{", re.S)


def crates(root):
    """Yields (crate name, src dir) for each crate: every Cargo.toml with a src/ beside it."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", ".tools", "node_modules")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            yield os.path.relpath(dirpath, root), os.path.join(dirpath, "src")


def module_of(src, path):
    """`src/a/b.rs` → ("a", "b"); `src/a/mod.rs` → ("a",); `src/lib.rs` → ()."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod" or (len(rel) == 1 and rel[0] in ("lib", "main")):
        rel = rel[:-1]
    return tuple(rel)


def expand_braces(text):
    """`a::{b, c::{d, e}}` → ["a::b", "a::c::d", "a::c::e"]."""
    out, depth, start, prefix = [], 0, 0, ""
    m = re.match(r"\s*((?:" + IDENT + r"::)*)\{(.*)\}\s*$", text, re.S)
    if not m:
        return [text.strip()]
    prefix, inner = m.group(1), m.group(2)
    parts = []
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    for p in parts:
        if p.strip():
            out.extend(prefix + q for q in expand_braces(p))
    return out


def references(text):
    """Every `crate::…` / `super::…` path the file names, as (root, [segments])."""
    refs = []
    for m in USE_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        for p in expand_braces("{" + text[m.end():i - 1] + "}"):
            refs.append((m.group(1), [s for s in p.split("::") if s and s != "self"]))
    for m in PATH_RE.finditer(text):
        refs.append((m.group(1), m.group(2).split("::")[1:]))
    return refs


def resolve(modules, here, root, segs):
    """The longest known module the path points into, or None."""
    base = list(here) if root == "super" else []
    if root == "super":
        base = base[:-1]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    full = base + segs
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in modules:
            return tuple(full[:n])
    return None


def sccs(nodes, edges):
    """Tarjan's strongly connected components with more than one member."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def circles(src):
    files = {}
    for dirpath, _, filenames in os.walk(src):
        for f in filenames:
            if f.endswith(".rs"):
                p = os.path.join(dirpath, f)
                files[module_of(src, p)] = p
    top, siblings = {}, {}
    for mod, path in files.items():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        for root, segs in references(text):
            target = resolve(files, mod, root, segs)
            if target is None or target == mod or mod[: len(target)] == target:
                continue  # itself, or an ancestor
            if mod and target and mod[0] != target[0]:
                top.setdefault(mod[0], set()).add(target[0])
            if len(mod) >= 2 and len(target) >= 2 and mod[:-1] == target[:-1]:
                siblings.setdefault(mod, set()).add(target)
    found = [" ↔ ".join(c) for c in sccs(set(top) | {t for s in top.values() for t in s}, top)]
    found += [
        " ↔ ".join("/".join(m) + ".rs" for m in c)
        for c in sccs(set(siblings) | {t for s in siblings.values() for t in s}, siblings)
    ]
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    root = os.path.abspath(root)
    print("import circles:")
    n = 0
    for name, src in sorted(crates(root)):
        for c in circles(src):
            print(f"  {name}: {c}")
            n += 1
    print(f"  ({n} in all)")
    print("files over 600 lines:")
    big = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", ".tools", "node_modules")]
        for f in filenames:
            if f.endswith(".rs"):
                p = os.path.join(dirpath, f)
                with open(p, encoding="utf-8") as fh:
                    lines = sum(1 for _ in fh)
                if lines > 600:
                    big.append((lines, os.path.relpath(p, root)))
    for lines, p in sorted(big, reverse=True):
        print(f"  {lines:5} {p}")
    print(f"  ({len(big)} in all)")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # piped into head
        sys.exit(0)
