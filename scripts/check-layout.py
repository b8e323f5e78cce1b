#!/usr/bin/env python3
"""The code's shape, checked (issue 12): no source file in src/ over MAX_LINES
lines (generated bindings excepted), and no import cycle: no module uses a
sibling module that uses it back, and no two top-level modules use each other
(a child using its parent's items through `super::` is not a cycle).
Prints one line per check in the format of scripts/lib/check.sh and
"layout: N passed, N failed"; exits 1 on a failure.

    scripts/check-layout.py [REPO_ROOT]
"""
import os
import re
import sys

MAX_LINES = 650
GENERATED = {"src/ffi/sasl_sys_pregen.rs"}


def modules(src):
    """module path ("engine::attempt") -> file, for every file of the library."""
    found = {}
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            parts = os.path.relpath(path, src)[:-3].split("/")
            if parts[0] == "bin":
                continue
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            found["::".join(parts)] = path
    return found


def uses(mods, module, text):
    """The modules `module` names through crate::, super:: or self:: paths."""
    # Unit tests may reach anywhere; they are not part of the module graph.
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    here = module.split("::") if module else []
    out = set()
    for m in re.finditer(r"\b((?:crate|super|self)(?:::\w+)+)", text):
        parts = m.group(1).split("::")
        if parts[0] == "crate":
            base, parts = [], parts[1:]
        elif parts[0] == "self":
            base, parts = here, parts[1:]
        else:
            base = here
            while parts and parts[0] == "super":
                base, parts = base[:-1], parts[1:]
        full = base + parts
        for n in range(len(full), -1, -1):
            target = "::".join(full[:n])
            if target in mods:
                if target != module:
                    out.add(target)
                break
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    src = os.path.join(root, "src")
    mods = modules(src)
    passed = failed = 0

    def report(good, msg):
        nonlocal passed, failed
        if good:
            passed += 1
            print(f"ok   - {msg}")
        else:
            failed += 1
            print(f"FAIL - {msg}")

    long_files = []
    for path in sorted(mods.values()):
        rel = os.path.relpath(path, root)
        if rel in GENERATED:
            continue
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long_files.append(f"{rel} ({n} lines)")
    report(not long_files, f"no file in src/ over {MAX_LINES} lines" +
           (": " + ", ".join(long_files) if long_files else ""))

    graph = {}
    for module, path in mods.items():
        with open(path) as f:
            graph[module] = uses(mods, module, f.read())

    def nested(a, b):
        return a == "" or b == "" or a.startswith(b + "::") or b.startswith(a + "::")

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a]
                     if a in graph.get(b, ()) and not nested(a, b)})
    report(not cycles, "no two modules use each other" +
           (": " + ", ".join(f"{a} <-> {b}" for a, b in cycles) if cycles else ""))

    top = {}
    for a in graph:
        for b in graph[a]:
            ta, tb = a.split("::")[0], b.split("::")[0]
            if ta and tb and ta != tb:
                top.setdefault(ta, set()).add(tb)
    top_cycles = sorted({tuple(sorted((a, b))) for a in top for b in top[a] if a in top.get(b, ())})
    report(not top_cycles, "no two top-level modules use each other" +
           (": " + ", ".join(f"{a} <-> {b}" for a, b in top_cycles) if top_cycles else ""))

    print(f"layout: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
