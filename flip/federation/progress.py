"""A rich progress bar over rounds: round, global top-1 accuracy, GB sent so far."""

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RoundProgress:
    """Context manager; ``update(row)`` advances one round and shows ``global/acc1`` (last
    evaluated, %) and ``cost/gb_cum`` from the round's row. ``done``: rounds already completed
    (a resumed run)."""

    def __init__(self, rounds: int, enabled: bool = True, done: int = 0):
        self.bar = Progress(
            TextColumn("round"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("acc1 {task.fields[acc]}"),
            TextColumn("GB {task.fields[gb]}"),
            TimeElapsedColumn(),
            disable=not enabled,
        )
        self.task = self.bar.add_task(
            "rounds", total=rounds, completed=done, acc="-", gb="0.000"
        )

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    def update(self, row: dict) -> None:
        fields = {"gb": f"{row['cost/gb_cum']:.3f}"}
        if "global/acc1" in row:
            fields["acc"] = f"{100 * row['global/acc1']:.2f}%"
        self.bar.update(self.task, advance=1, **fields)
