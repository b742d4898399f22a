#!/usr/bin/env python3
"""Checks that the Rust modules of every crate depend on each other one way only.

For each crate, every module (a file) and the modules it names (`use crate::…`,
`use super::…`, `crate::…::` paths in code; test modules left out) form a graph: a cycle in it
fails the check. In the server, the top-level modules are also layers, each of which may use
only its own layer and those below it (see ARCHITECTURE.md): a use of one above fails too.

    scripts/layers.py            check, print what is wrong, exit 1 if anything is
    scripts/layers.py --graph    also print each crate's module graph

Needs only Python 3's standard library.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = ["server", "app", "frontend", "loadgen", "bench", "attack"]

# The server's layers, bottom first; a module may use its own layer and those below.
SERVER_LAYERS = [
    {"wire", "metrics", "telemetry"},
    {"update"},
    {"stream"},
    {"net"},
    {"broker"},
    {"hub"},
    {"counter"},
    {"site"},
    {"app", "config"},
]

TEST_MODULE = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
PATH = re.compile(r"\b(crate|super|self)((?:\s*::\s*(?:\w+|\{))+)")


def rust_files(src):
    for root, _, names in os.walk(src):
        for name in sorted(names):
            if name.endswith(".rs"):
                yield os.path.join(root, name)


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def without_tests(text):
    """The text with comments, strings and `#[cfg(test)] mod … { … }` blocks removed."""
    text = COMMENT.sub("", text)
    text = STRING.sub('""', text)
    out, at = [], 0
    for match in TEST_MODULE.finditer(text):
        if match.start() < at:
            continue
        out.append(text[at : match.start()])
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        at = i
    out.append(text[at:])
    return "".join(out)


def use_paths(text):
    """Every path a `use` names (groups expanded) and every `crate::`/`super::` path in code,
    as (base, [segments])."""
    paths = []
    for use in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand(use.group(1).replace(" ", "").replace("\n", "")))
    for match in PATH.finditer(text):
        segments = re.findall(r"\w+", match.group(2))
        paths.append((match.group(1), segments))
    return paths


def expand(tree, prefix=()):
    """`a::{b, c::{d}}` → [a::b, a::c::d]."""
    out = []
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(tree[start:i])
            start = i + 1
    parts.append(tree[start:])
    for part in filter(None, parts):
        if "{" in part:
            head, inner = part.split("{", 1)
            inner = inner[: inner.rfind("}")]
            head = tuple(s for s in head.split("::") if s)
            out.extend(expand(inner, prefix + head))
        else:
            segments = prefix + tuple(s for s in part.split("::") if s and s != "*")
            segments = tuple(s.split(" as ")[0] for s in segments)
            if segments and segments[0] in ("crate", "super", "self"):
                out.append((segments[0], list(segments[1:])))
    return out


def resolve(modules, module, base, segments):
    """The deepest known module a path starting at `base` (seen from `module`) names."""
    if base == "crate":
        start = ()
    elif base == "super":
        start = module[:-1]
        while segments and segments[0] == "super":
            segments, start = segments[1:], start[:-1]
    else:
        start = module
    target, best = start, None
    for segment in segments:
        target = target + (segment,)
        if target in modules:
            best = target
    return best


def graph_of(src):
    files = list(rust_files(src))
    has_lib = os.path.exists(os.path.join(src, "lib.rs"))
    modules = {}
    for path in files:
        # A crate with a library has its binary (main.rs) apart: it names the library by
        # its crate name, not `crate::`.
        if has_lib and os.path.relpath(path, src) == "main.rs":
            continue
        # A test module in its own file (`#[cfg(test)] mod tests;`) is left out too.
        if os.path.basename(path) == "tests.rs":
            continue
        modules[module_of(src, path)] = path
    graph = {module: set() for module in modules}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as file:
            text = without_tests(file.read())
        for base, segments in use_paths(text):
            target = resolve(modules, module, base, list(segments))
            if target is not None and target != module and target != ():
                graph[module].add(target)
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def name(module):
    return "::".join(module) or "crate"


def layer_of(module):
    for level, layer in enumerate(SERVER_LAYERS):
        if module and module[0] in layer:
            return level
    return None


def main():
    show = "--graph" in sys.argv[1:]
    problems = []
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        graph = graph_of(src)
        if show:
            print(f"== {crate}")
            for module in sorted(graph):
                uses = ", ".join(sorted(name(m) for m in graph[module]))
                print(f"  {name(module)} -> {uses}")
        for component in cycles(graph):
            problems.append(f"{crate}: a cycle: {' <-> '.join(name(m) for m in component)}")
        if crate != "server":
            continue
        for module, uses in sorted(graph.items()):
            if module == ():
                continue
            level = layer_of(module)
            if level is None:
                problems.append(f"server: {name(module)} belongs to no layer (scripts/layers.py)")
                continue
            for target in sorted(uses):
                other = layer_of(target)
                if other is not None and other > level:
                    problems.append(
                        f"server: {name(module)} (layer {level}) uses {name(target)} "
                        f"(layer {other}, above it)"
                    )
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} layering problem(s); see ARCHITECTURE.md")
        return 1
    print("layers: every crate's modules depend one way; the server's layers hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
