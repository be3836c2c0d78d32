"""``femot demo [NAME]``: run one demo, or every flagship demo into one results directory."""
from __future__ import annotations

import argparse
import os
import sys
import time

from femot._io import OutputPathError, check_writable, write_json
from femot.demos.common import add_output_options, check_output_paths, write_summary


def _add_common_demo_options(p: argparse.ArgumentParser) -> None:
    add_output_options(p, seed=True, quick=True)


def _run_demo(mod, args) -> dict:
    t0 = time.perf_counter()
    summary = mod.run(args)
    summary = dict(summary or {})
    summary.setdefault("demo", mod.NAME)
    summary.setdefault("seed", args.seed)
    summary["wall_time_s"] = round(time.perf_counter() - t0, 3)
    if args.json:
        write_summary(args.json, summary)
    return summary


def _demo_parser(mod) -> argparse.ArgumentParser:
    """The parser of ``femot demo NAME``: the common options and the demo's own."""
    p = argparse.ArgumentParser(prog=f"femot demo {mod.NAME}", description=getattr(mod, "SUMMARY", ""))
    p.add_argument("name", help=argparse.SUPPRESS)
    _add_common_demo_options(p)
    if hasattr(mod, "add_arguments"):
        g = p.add_argument_group(f"options of {mod.NAME}")
        mod.add_arguments(g)
    return p


def cmd_demo(argv) -> int:
    """``femot demo [NAME] [options]``: run one demo, or every flagship demo into one folder.

    Exit status 1 if a demo reports failure (command contract: :mod:`femot.cli`).
    """
    from femot.demos import available_demos

    argv = list(argv)
    demos = available_demos()
    p = argparse.ArgumentParser(
        prog="femot demo",
        description="Run femot's demos. With no name, run every flagship demo into ./femot-results/. "
                    "`femot demo NAME --help` lists the options of one demo.",
        add_help=False,
    )
    p.add_argument("-h", "--help", action="store_true", help="show this help (with NAME: that demo's options)")
    p.add_argument("name", nargs="?", help="demo to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the demos and exit")
    p.add_argument("--out", default="femot-results", help="output directory when running all demos")
    _add_common_demo_options(p)
    # Let demos register their own options; unknown options of other demos are ignored.
    args, rest = p.parse_known_args(argv)
    if args.name is not None and args.name not in demos:
        print(f"femot demo: unknown demo {args.name!r}; available: {', '.join(demos)} (femot demo --list)",
              file=sys.stderr)
        return 2
    if args.help and args.name is None:
        p.print_help()
        return 0
    if args.list:
        for name, mod in demos.items():
            print(f"{name:18s} {getattr(mod, 'SUMMARY', '')}")
        return 0
    if args.name is not None:
        mod = demos[args.name]
        args = _demo_parser(mod).parse_args(argv)  # exits 2 on bad options, 0 after --help
        try:
            check_output_paths(args)
        except OutputPathError as exc:
            print(f"femot demo {mod.NAME}: {exc}", file=sys.stderr)
            return 2
        print(f"femot demo {mod.NAME} (seed {args.seed})")
        try:
            summary = _run_demo(mod, args)
        except ValueError as exc:  # a bad option value, caught by the library's checks
            print(f"femot demo {mod.NAME}: error: {exc}", file=sys.stderr)
            return 2
        ok = summary.get("success", True)
        if args.json != "-":  # stdout ends with the JSON document then
            where = f"summary in {args.json}" if args.json else "the summary as JSON: --json OUT.json, or --json -"
            figs = f"figures in {args.plot}" if args.plot else "figures: --plot DIR"
            print(f"done in {summary['wall_time_s']} s: {'success' if ok else 'FAILED (see the table above)'}; "
                  + where + "; " + figs)
        return 0 if ok else 1
    # All flagship demos into one results directory.
    if rest:
        print(f"femot demo: unrecognized arguments: {' '.join(rest)} (options of one demo need its NAME)",
              file=sys.stderr)
        return 2
    try:
        check_writable(args.out, "--out", directory=True)
    except OutputPathError as exc:
        print(f"femot demo: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    index = {}
    status = 0
    for name, mod in demos.items():
        if not getattr(mod, "FLAGSHIP", True):
            continue
        sub = _demo_parser(mod).parse_args([name])  # the demo's defaults
        sub.seed, sub.quick, sub.quiet = args.seed, args.quick, args.quiet
        sub.plot = os.path.join(args.out, name)
        sub.json = os.path.join(args.out, f"{name}.json")
        print(f"\n=== femot demo {name} (seed {sub.seed}) ===", flush=True)
        try:
            summary = _run_demo(mod, sub)
        except Exception as exc:  # keep going: one failing demo must not hide the others
            print(f"demo {name} FAILED: {exc!r}", file=sys.stderr)
            index[name] = {"success": False, "error": repr(exc)}
            status = 1
            continue
        index[name] = {"success": bool(summary.get("success", True)), "json": sub.json,
                       "figures": sub.plot, "wall_time_s": summary["wall_time_s"]}
        if not index[name]["success"]:
            status = 1
    write_json(os.path.join(args.out, "summary.json"), index)
    print(f"\nResults in {os.path.abspath(args.out)}:")
    for name, info in index.items():
        print(f"  {name:18s} {'ok' if info['success'] else 'FAILED'}")
    return status
