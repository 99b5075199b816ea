"""The shape of the package: one direction of imports (no cycles, nothing imports the launcher back)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(top_level_only: bool) -> dict[str, set[str]]:
    """reglab module -> the reglab modules it imports (``top_level_only``: at import time, not inside functions)."""
    modules = {module_name(p): p for p in (SRC / "reglab").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        targets = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_import_graph_of_reglab_has_no_cycle():
    assert find_cycle(import_graph(top_level_only=True)) is None
    assert find_cycle(import_graph(top_level_only=False)) is None  # not even through imports inside functions


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_the_launcher_back():
    importers = sorted(m for m, targets in import_graph(top_level_only=False).items() if "reglab.run" in targets)
    assert importers == []


def test_a_run_checks_each_thing_once_and_its_config_visits_the_launcher_at_most_twice(make_config):
    """Issue 29: one pre-flight. In a whole run (main -> pre-flight -> job -> results.json), each check function
    runs once, and the config passes through the launcher's module (reglab.run) at most twice on its way to the
    job: once in, once back from the pre-flight (a visit: a reglab function taking the config or the Preflight
    that enters run.py, or one that returns into it from another module)."""
    import inspect
    import sys
    from collections import Counter

    from reglab import checks, contracts, job, optim, preflight, regularizers, run, values
    from reglab.identity import RunLabel

    cfg = make_config("data=digits", "reg=weight_decay")  # weight_decay: the decoupled-decay check runs too
    watched = {f.__code__: f"{m.__name__}.{name}" for m in (values, checks, optim, contracts, preflight)
               for name, f in vars(m).items() if inspect.isfunction(f) and f.__module__ == m.__name__
               and (name.startswith("check_") or name in ("preflight", "validate", "checked", "label_and_identity"))}
    watched[regularizers.build_regularizers.__code__] = "build_regularizers"
    watched[RunLabel.of.__func__.__code__] = "RunLabel.of"
    launcher, package = run.__file__, str(Path(run.__file__).parent)
    calls, visits, carriers, in_job = Counter(), [], set(), [False]

    def carries_config(frame) -> bool:
        return any(v is cfg or isinstance(v, preflight.Preflight) for v in frame.f_locals.values())

    def profile(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if code in watched:
                calls[watched[code]] += 1
            if code is job.run_job.__code__:
                in_job[0] = True
            if in_job[0] or not code.co_filename.startswith(package) or not carries_config(frame):
                return
            carriers.add(frame)
            caller = frame.f_back
            if code.co_filename == launcher and (caller is None or caller.f_code.co_filename != launcher):
                visits.append(f"into {code.co_name}")
        elif event == "return" and frame in carriers:
            carriers.discard(frame)
            caller = frame.f_back
            if (not in_job[0] and frame.f_code.co_filename != launcher and caller is not None
                    and caller.f_code.co_filename == launcher):
                visits.append(f"back from {frame.f_code.co_name}")

    sys.setprofile(profile)
    try:
        metric = run.main(cfg)
    finally:
        sys.setprofile(None)
    assert metric is not None and metric == metric  # the run completed (a failed one returns NaN or exits)
    assert in_job[0]
    assert len(visits) <= 2, visits
    assert calls and {name: n for name, n in calls.items() if n != 1} == {}, calls
    assert {"reglab.values.check_early", "reglab.optim.check_optim_config", "reglab.optim.check_decoupled_decay",
            "reglab.checks.check_targets", "build_regularizers"} <= set(calls)
