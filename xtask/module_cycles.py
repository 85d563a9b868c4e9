"""Lists the import cycles between modules inside each crate of the workspace.

A module is a file under a crate's src/ (foo.rs and foo/mod.rs are module `foo`; foo/bar.rs is
`foo::bar`). A module depends on another when its code names it through `crate::`, `super::`
or a `use` of either. A child's use of its parent (`super::`) is where a split belongs and is
not counted, nor is a parent's use of its own children. Prints each cycle (strongly connected
set of two or more modules, or a module that reaches itself through others); exits 1 if any.

usage: python3 xtask/module_cycles.py [crate-dir ...]   (default: every crate in the workspace)
"""

import os
import re
import sys


def modules(src):
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            out["::".join(rel)] = path
    return out


PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")


def deps(name, path, mods):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"//[^\n]*", "", text)
    here = name.split("::") if name else []
    found = set()

    def resolve(kind, parts):
        base = [] if kind == "crate" else here[:-1]
        full = base + parts
        # The longest prefix that is a module.
        for n in range(len(full), 0, -1):
            cand = "::".join(full[:n])
            if cand in mods:
                return cand
        return None

    for m in PATH.finditer(text):
        parts = [p for p in m.group(2).split("::") if p]
        t = resolve(m.group(1), parts)
        if t:
            found.add(t)
    for m in GROUP.finditer(text):
        for item in m.group(2).split(","):
            item = item.strip().split("::")[0].split(" ")[0]
            if item and item != "self":
                t = resolve(m.group(1), [item])
                if t:
                    found.add(t)
    out = set()
    for t in found:
        if t == name:
            continue
        # A child naming its parent (or any ancestor), or a parent naming its child: not a cycle.
        if name.startswith(t + "::") or t.startswith(name + "::") if name else True:
            continue
        out.add(t)
    return out


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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

    for v in graph:
        if v not in index:
            strong(v)
    return out


def crates():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = []
    for d, _, files in os.walk(root):
        if "/target" in d or "/.venv" in d or "/fuzz" in d or "/.git" in d:
            continue
        if "Cargo.toml" in files and os.path.isdir(os.path.join(d, "src")):
            out.append(d)
    return sorted(out)


def main():
    sys.setrecursionlimit(10000)
    dirs = sys.argv[1:] or crates()
    bad = 0
    for d in dirs:
        mods = modules(os.path.join(d, "src"))
        graph = {n: deps(n, p, mods) for n, p in mods.items() if n}
        for comp in cycles(graph):
            bad += 1
            print(f"{os.path.relpath(d)}: {' <-> '.join(comp)}")
    if bad == 0:
        print(f"no module cycles in {len(dirs)} crates")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
