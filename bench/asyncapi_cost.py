"""What EVerest's AsyncAPI documents cost at start-up, side by side in one run, as deltas and ratios.

    .venv/bin/python bench/asyncapi_cost.py (--docs DIR | --everest-repo GITDIR [--rev REV]) [--rounds 5]

The documents are EVerest's (``docs/source/reference/EVerest_API/*.yaml`` in EVerest/EVerest: 23 of
them); the bench does not ship them. ``--docs`` takes a directory of them (an EVerest installation's
``<prefix>/share/everest/EVerest_API``); ``--everest-repo`` a git directory of EVerest (a bare clone
is enough), from which they are extracted at REV into a temporary directory.

Each case is a fresh ``python`` (bytecode caches on, warmed by one unmeasured run of every case) that
validates a flow as ``evflow run`` does (``load_plan``, node types from the entry points and from
``$EVFLOW_API_DOCS``):

* A, the baseline: an evse_security-only flow (mqtt-broker, everest-api, inject,
  is-ca-certificate-installed), ``$EVFLOW_API_DOCS`` unset;
* B: the same flow with the documents on ``$EVFLOW_API_DOCS`` (there, unused);
* C: a powermeter flow (a question node and its answer node, a send node), the documents on the path;
* D: an evse_manager_consumer flow (a receive node, a request node), whose document ``$ref``\\ s others;
* L: A's flow, then every document read and its types made (``load_all``), no node classes;
* E: L, and every operation's node class made (``node_class`` of each ``node_type_names``): what
  ``evflow nodes`` pays. E - A is the cost of the 23 documents; the target is under 1 s and under 10 MB.

C and D must read only documents their API's document names by ``$ref`` (transitively; the loader
follows the schemas it uses, so it may read fewer), and B none.

The cases run interleaved (the order rotating each round), and each figure is the median over rounds:
the time inside the child from the top of its script to the end of the work, the whole process's wall
time seen from here (interpreter start-up and exit included), and the child's peak RSS (ru_maxrss at
the end). The report prints each with its delta and ratio against A, and what C and D read.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DOCS_IN_REPO = "docs/source/reference/EVerest_API/"
HOW_TO_GET_THEM = f"""\
asyncapi_cost: give the EVerest API documents:
  --docs DIR           a directory of them, e.g. an EVerest installation's <prefix>/share/everest/EVerest_API
  --everest-repo GIT   a git directory of EVerest, e.g. one made with
                       git clone --bare --filter=blob:none https://github.com/EVerest/EVerest everest.git
                       (the bench extracts {DOCS_IN_REPO}*.yaml at --rev, default HEAD)"""

# The targets: what loading every document may add to the evse_security-only start-up.
MAX_SECONDS = 1.0
MAX_RSS_MB = 10.0

# The child: one case, timed from the top of its script; prints one JSON line.
CHILD = '''\
import time
_t0 = time.perf_counter()
import json, resource, sys

case, flow = sys.argv[1], sys.argv[2]
from evflow.runtime.flows import load_plan
from evflow.runtime.registry import Registry

registry = Registry.from_entry_points()  # what load_plan makes: the entry points and $EVFLOW_API_DOCS
plan = load_plan([flow], registry=registry)
catalogue = registry.apis
made, errors = 0, {}
if case in ("L", "E"):
    apis, errors = catalogue.load_all()
    for api in apis if case == "E" else ():
        for name in catalogue.node_type_names(api):
            registry.load(name)
            made += 1
elapsed = time.perf_counter() - _t0
rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
yaml = sys.modules.get("yaml")
print(json.dumps({
    "in_process_s": elapsed, "rss_kb": rss_kb, "nodes": len(plan.nodes),
    "search_path": [str(p) for p in catalogue.search_path], "documents": sorted({p.name for api in catalogue._apis.values() for p in api.read_paths}),
    "apis": sorted(catalogue._apis), "node_types_made": made, "errors": errors, "modules": len(sys.modules),
    "yaml": None if yaml is None else bool(getattr(yaml, "__with_libyaml__", False)),
    "dont_write_bytecode": sys.flags.dont_write_bytecode,
}))
'''


def _tab(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    broker = {"id": "broker", "type": "mqtt-broker", "z": "t", "broker": "mqtt://127.0.0.1:1883"}
    return [{"id": "t", "type": "tab", "label": "asyncapi cost"}, broker, *({"z": "t", **n} for n in nodes)]


FLOWS: dict[str, list[dict[str, Any]]] = {
    "evse_security": _tab([
        {"id": "sec", "type": "everest-api", "broker": "broker", "module_id": "sec1"},
        {"id": "go", "type": "inject", "once": True, "wires": [["ask"]]},
        {"id": "ask", "type": "is-ca-certificate-installed", "api": "sec", "certificate_type": "V2G",
         "wires": [[], []]},
    ]),
    "powermeter": _tab([
        {"id": "pm", "type": "everest-api", "broker": "broker", "api": "powermeter", "module_id": "pm1"},
        {"id": "question", "type": "powermeter/receive_request_start_transaction", "api": "pm",
         "wires": [["answer"]]},
        {"id": "answer", "type": "powermeter/send_reply_start_transaction", "api": "pm"},
        {"id": "go", "type": "inject", "once": True, "wires": [["values"]]},
        {"id": "values", "type": "powermeter/send_powermeter_values", "api": "pm"},
    ]),
    "evse_manager_consumer": _tab([
        {"id": "em", "type": "everest-api", "broker": "broker", "api": "evse_manager_consumer", "module_id": "em1"},
        {"id": "events", "type": "evse_manager_consumer/receive_session_event", "api": "em", "wires": [["out"]]},
        {"id": "go", "type": "inject", "once": True, "wires": [["ask"]]},
        {"id": "ask", "type": "evse_manager_consumer/send_request_get_evse", "api": "em",
         "wires": [["out"], ["out"]]},
        {"id": "out", "type": "debug"},
    ]),
}

# case: (label, flow, documents on $EVFLOW_API_DOCS)
CASES: dict[str, tuple[str, str, bool]] = {
    "A": ("evse_security flow, no documents", "evse_security", False),
    "B": ("same, 23 on the path, unused", "evse_security", True),
    "C": ("powermeter flow", "powermeter", True),
    "D": ("evse_manager_consumer flow", "evse_manager_consumer", True),
    "L": ("A + all loaded (load_all only)", "evse_security", True),
    "E": ("A + all loaded, every node class", "evse_security", True),
}


def extract_docs(git_dir: Path, rev: str, into: Path) -> Path:
    """EVerest's API documents at ``rev`` of ``git_dir``, written into ``into``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True,
                              check=True).stdout

    names = [n for n in git("ls-tree", "--name-only", rev, DOCS_IN_REPO).split() if n.endswith((".yaml", ".yml"))]
    if not names:
        raise SystemExit(f"asyncapi_cost: no {DOCS_IN_REPO}*.yaml at {rev} in {git_dir}")
    for name in names:
        (into / Path(name).name).write_text(git("show", f"{rev}:{name}"))
    return into


def ref_closure(docs: Path, api: str) -> list[str]:
    """The documents an API's document names by ``$ref`` (``other_API.yaml#/...``), transitively: what
    a flow using only this API may read (found from the text, independently of the loader; file by file,
    so it is an upper bound: the loader follows only the schemas the API's operations use)."""
    refs = re.compile(r"""\$ref:\s*['"]?([^'"#\s]+\.ya?ml)#""")
    seen, todo = [], [f"{api}_API.yaml"]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        todo += [m for m in refs.findall((docs / name).read_text()) if m not in seen]
    return seen


def run_case(case: str, script: Path, flows: Path, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), case, str(flows / f"{CASES[case][1]}.json")],
                          cwd=script.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"asyncapi_cost: case {case} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    result["process_s"] = wall
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--docs", type=Path, metavar="DIR", help="a directory of EVerest's API documents")
    source.add_argument("--everest-repo", type=Path, metavar="GITDIR", help="a git directory of EVerest")
    parser.add_argument("--rev", default="HEAD", help="the revision of --everest-repo (default HEAD)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.docs is None and args.everest_repo is None:
        print(HOW_TO_GET_THEM, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="evflow-asyncapi-cost-") as scratch:
        work = Path(scratch)
        if args.docs is not None:
            docs, where = args.docs.resolve(), str(args.docs)
        else:
            (work / "docs").mkdir()
            docs = extract_docs(args.everest_repo, args.rev, work / "docs")
            where = f"{args.everest_repo} at {args.rev}"
        count = len([p for p in docs.iterdir() if p.suffix in (".yaml", ".yml", ".json")])
        script = work / "child.py"
        script.write_text(CHILD)
        (work / "flows").mkdir()
        for name, nodes in FLOWS.items():
            (work / "flows" / f"{name}.json").write_text(json.dumps(nodes, indent=1))
        # As a user runs it: bytecode caches written and read, no documents unless the case says so.
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "EVFLOW_API_DOCS")}
        envs = {case: {**base, "EVFLOW_API_DOCS": str(docs)} if with_docs else base
                for case, (_, _, with_docs) in CASES.items()}
        last = {case: run_case(case, script, work / "flows", envs[case]) for case in CASES}  # warm-up
        rounds: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
        order = list(CASES)
        for r in range(args.rounds):
            for case in order[r % len(order):] + order[:r % len(order)]:  # a drift of the machine hits all
                last[case] = run_case(case, script, work / "flows", envs[case])
                rounds[case].append(last[case])
        closures = {case: ref_closure(docs, CASES[case][1]) for case in ("C", "D")}
    return report(args, where, count, rounds, last, closures)


def report(args: argparse.Namespace, where: str, count: int, rounds: dict[str, list[dict[str, Any]]],
           last: dict[str, dict[str, Any]], closures: dict[str, list[str]]) -> int:
    med = {case: {"ms": 1000 * statistics.median(r["in_process_s"] for r in results),
                  "proc_ms": 1000 * statistics.median(r["process_s"] for r in results),
                  "mb": statistics.median(r["rss_kb"] for r in results) / 1024}
           for case, results in rounds.items()}
    a = med["A"]
    libyaml = last["E"]["yaml"]
    print(f"EVerest API documents at start-up: {count} documents from {where}; median of {args.rounds} rounds, "
          f"each case a fresh {Path(sys.executable).name} {sys.version.split()[0]} with bytecode caches; "
          f"yaml {'with' if libyaml else 'WITHOUT'} libyaml")
    if last["A"]["search_path"]:
        print(f"  note: A's search path is not empty ({', '.join(last['A']['search_path'])}): an EVerest installation")
    print(f"{'case':40s} {'in-proc ms':>10s} {'process ms':>10s} {'RSS MB':>7s} "
          f"{'Δms':>7s} {'Δproc ms':>8s} {'ΔMB':>6s} {'ms/A':>6s} {'MB/A':>6s} {'modules':>7s}")
    for case, m in med.items():
        print(f"{case} {CASES[case][0]:38s} {m['ms']:10.1f} {m['proc_ms']:10.1f} {m['mb']:7.1f} "
              f"{m['ms'] - a['ms']:+7.1f} {m['proc_ms'] - a['proc_ms']:+8.1f} {m['mb'] - a['mb']:+6.1f} "
              f"{m['ms'] / a['ms']:5.2f}x {m['mb'] / a['mb']:5.2f}x {last[case]['modules']:7d}")
    e = med["E"]
    seconds = max(e["ms"] - a["ms"], e["proc_ms"] - a["proc_ms"]) / 1000
    mb = e["mb"] - a["mb"]
    loaded_all = len(last["E"]["documents"]) == count and not last["E"]["errors"]
    met = seconds < MAX_SECONDS and mb < MAX_RSS_MB and loaded_all
    print(f"\nE - A, all {len(last['E']['apis'])} APIs ({len(last['E']['documents'])} documents read, "
          f"{last['E']['node_types_made']} node classes made): {seconds * 1000:+.0f} ms, {mb:+.1f} MB "
          f"(target < {MAX_SECONDS:g} s and < {MAX_RSS_MB:g} MB): {'met' if met else 'NOT met'}")
    for name, error in last["E"]["errors"].items():
        print(f"  {name} did not load: {error}")
    ell = med["L"]
    print(f"  of which load_all (L - A): {max(ell['ms'] - a['ms'], ell['proc_ms'] - a['proc_ms']):+.0f} ms, "
          f"{ell['mb'] - a['mb']:+.1f} MB; the node classes (E - L): {e['ms'] - ell['ms']:+.0f} ms, "
          f"{e['mb'] - ell['mb']:+.1f} MB")
    b = last["B"]
    unused_free = not b["documents"] and b["yaml"] is None
    print(f"B - A, 23 on the path and unused: {med['B']['ms'] - a['ms']:+.1f} ms, {med['B']['mb'] - a['mb']:+.1f} MB; "
          f"documents read: {len(b['documents'])}, yaml imported: {'no' if b['yaml'] is None else 'yes'}")
    only_theirs = True
    for case in ("C", "D"):
        m, read = med[case], last[case]["documents"]
        within = set(read) <= set(closures[case])
        only_theirs = only_theirs and within
        print(f"{case} - A, {CASES[case][0]}: {m['ms'] - a['ms']:+.1f} ms, {m['proc_ms'] - a['proc_ms']:+.1f} ms "
              f"process, {m['mb'] - a['mb']:+.1f} MB; read {len(read)} of {count}: {', '.join(read)}")
        outside = sorted(set(read) - set(closures[case]))
        unread = sorted(set(closures[case]) - set(read))
        print(f"  within its $ref closure of {len(closures[case])}: "
              f"{'yes' if within else 'NO, also ' + ', '.join(outside)}"
              f"{' (not read: ' + ', '.join(unread) + ')' if unread else ''}; APIs made: {', '.join(last[case]['apis'])}")
    print(f"a flow pays only for its API: {'yes' if only_theirs and unused_free else 'NO'}")
    return 0 if met and only_theirs and unused_free else 1


if __name__ == "__main__":
    sys.exit(main())
