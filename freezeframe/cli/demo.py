"""`freezeframe demo`: the offline end-to-end example."""

from __future__ import annotations

import click

from freezeframe.cli.group import main


@main.command()
@click.option("--out", default="freezeframe-demo", show_default=True, help="Working directory for videos, store, runs.")
@click.option("--videos", type=int, default=160, show_default=True, help="Synthetic videos (75% train, 25% test).")
@click.option("--epochs", type=int, default=None, help="EVL epochs [default: EVL's default training length].")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out, videos, epochs, seed) -> None:
    """Offline end to end: synthetic videos -> features of a small random CLIP -> probe and EVL accuracies."""
    from freezeframe.demo import chance_band, run_demo

    result = run_demo(out, num_videos=videos, epochs=epochs, seed=seed, log=click.echo)
    low, high = chance_band(result["test_videos"])
    click.echo(f"probe (mean-pooled) top-1 {100 * result['probe']:.1f}%   EVL top-1 {100 * result['evl']:.1f}%   "
               f"({result['test_videos']} held-out videos; {result['seconds']:.0f}s)")
    click.echo(f"chance is 50%: on {result['test_videos']} held-out videos guessing alone scores "
               f"{100 * low:.0f}-{100 * high:.0f}% 95% of the time (1 run in 20 lands outside it)"
               + ("" if result["test_videos"] >= 40 else "; use --videos 160 or more for a clear gap") + ".")


