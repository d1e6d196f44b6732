"""`nhr dedupe run --province PK-PB` and `nhr dedupe estimate --province PK-PB`.

Both run in the custodian's process (its keys decrypt the records in memory) and print counts
only, never a value. See docs/linkage.md.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import TextColumn

from cli import progress

from registry.runtime import Runtime
from registry.settings import get_settings

app = typer.Typer(help="Record linkage: batch deduplication and model estimation (issue 13).", no_args_is_help=True)
console = Console(highlight=False)


@app.command("run")
def run(province: str = typer.Option(..., "--province", help="custodian province code, e.g. PK-PB"),
        workers: int = typer.Option(1, "--workers", min=1, max=16, help="processes scoring blocking units (forked; helps only with idle cores)")):
    """Scan a province for likely duplicates and fill the review queue; rerun to resume."""
    from registry.linkage import dedupe

    rt = Runtime.build(get_settings())
    try:
        with progress.bar(console, TextColumn("{task.fields[pairs]} pairs scored, {task.fields[proposed]} proposed")) as bar:
            reading = bar.add_task("reading records", total=None, pairs=0, proposed=0)
            scoring = bar.add_task("scoring blocks", total=None, pairs=0, proposed=0, visible=False)

            def show(p: dedupe.Progress) -> None:
                if p.phase == "reading":
                    bar.update(reading, completed=p.done)
                else:
                    bar.update(reading, total=bar.tasks[reading].completed)
                    bar.update(scoring, visible=True, total=p.total, completed=p.done, pairs=p.pairs, proposed=p.proposed)

            summary = dedupe.run(rt, province, on_progress=show, workers=workers)
    except dedupe.RunInProgress:
        console.print(f"[yellow]not started[/]: a deduplication of {province} is in progress elsewhere (nhr worker or "
                      "another nhr dedupe run); it resumes and finishes on its own")
        raise typer.Exit(1)
    finally:
        rt.engine.dispose()
    resumed = " (resumed)" if summary.resumed else ""
    console.print(f"run {summary.run_id}{resumed}: {summary.records} records, {summary.pairs_scored} pairs scored, "
                  f"{summary.proposed} new candidates; {summary.keys_written} blocking keys written")


@app.command("estimate")
def estimate(province: str = typer.Option(..., "--province", help="custodian province code, e.g. PK-PB"),
             activate: bool = typer.Option(True, help="make the new model the active one")):
    """Estimate m, u and the prior by EM (Splink, in memory) from the province's records; store them as a new model version."""
    from registry.linkage import modelling

    rt = Runtime.build(get_settings())
    try:
        version = modelling.estimate_and_store(rt, province, activate=activate)
    except ValueError as exc:
        console.print(f"[red]refused[/]: {exc}")
        raise typer.Exit(1)
    finally:
        rt.engine.dispose()
    console.print(f"model {version} stored{' and active' if activate else ''}")


@app.command("encode")
def encode(province: str = typer.Option(..., "--province", help="custodian province code, e.g. PK-SD")):
    """Compute the province's Bloom-filter linkage encodings (cross-province linkage without plaintext)."""
    from registry.linkage import cross_province

    rt = Runtime.build(get_settings())
    try:
        n = cross_province.encode_province(rt, province)
    finally:
        rt.engine.dispose()
    console.print(f"{n} records of {province} encoded")


@app.command("cross-province")
def cross(nodes: bool = typer.Option(False, "--nodes", help="as the national comparer of provincial nodes: pull each "
                                     "node's encodings over mutual TLS, compare, push the pairs back to both nodes")):
    """National layer: compare the provinces' encodings and queue cross-province candidate pairs."""
    rt = Runtime.build(get_settings())
    try:
        if nodes:
            _cross_nodes(rt)
            return
        from registry.linkage import cross_province

        compared, proposed = cross_province.compare(rt)
    finally:
        rt.engine.dispose()
    console.print(f"{compared} pairs of encodings compared, {proposed} new cross-province candidates")


def _cross_nodes(rt: Runtime) -> None:
    import asyncio

    from api.nodes.transport import MutualTlsTransport
    from registry.linkage import node_comparer

    try:
        comparer = node_comparer.Comparer.from_settings(rt.settings, MutualTlsTransport(rt.settings))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    report = asyncio.run(node_comparer.run(rt, comparer))
    for node, n in sorted(report.pulled.items()):
        console.print(f"{node}: {n} encodings pulled, {report.pushed.get(node, 0)} pairs pushed")
    console.print(f"{report.compared} pairs of encodings compared, {report.found} new cross-province pairs")
    if report.rescored or report.withdrawn or any(report.gone.values()):
        console.print(f"{sum(report.gone.values())} encodings removed on the nodes, {report.rescored} pairs re-scored, "
                      f"{report.withdrawn} pairs withdrawn (pushed to both nodes)")
    if report.unreachable:
        console.print(f"[yellow]not reached: {', '.join(sorted(set(report.unreachable)))} (its pairs wait for the next run)[/yellow]")
        raise typer.Exit(3)
