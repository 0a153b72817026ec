"""A run's plot (pass@1 and sampled pass rate per iteration) and a short markdown report."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(output_dir: str | Path, title: str = "LeTI run") -> tuple[Path, Path]:
    """Read ``metrics.jsonl`` and write ``pass_rate.png`` and ``report.md`` next to it."""
    output_dir = Path(output_dir)
    history = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_iteration: dict[int, dict] = {}
    for row in history:  # a resumed run may log an iteration again: keep the last
        by_iteration[row["iteration"]] = row
    rows = [by_iteration[i] for i in sorted(by_iteration)]
    plot = output_dir / "pass_rate.png"
    _plot(rows, plot, title)
    for r in rows:  # wall time of the phases (sampling, execution, training, evaluation)
        phases = [v for k, v in r.items() if k.startswith("time/") and isinstance(v, (int, float))]
        if phases:
            r["seconds"] = float(sum(phases))
    keys = [k for k in ("rollout/pass_rate", "eval/pass@1", "eval/pass@1/postprocessed", "train/loss", "train/rows",
                        "seconds") if any(k in r for r in rows)]
    lines = [f"# {title}", "", f"![pass rate per iteration]({plot.name})", "",
             "| iteration | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for r in rows:
        cells = [f"{r[k]:.0f}" if k == "seconds" and k in r else f"{r[k]:.3f}" if isinstance(r.get(k), float)
                 else str(r.get(k, "")) for k in keys]
        lines.append(f"| {r['iteration']} | " + " | ".join(cells) + " |")
    lines += ["", "`rollout/pass_rate`: share of the programs sampled in iteration N (for training, from the model "
              "iteration N starts with) that passed; `eval/pass@1`: pass@1 on the evaluation tasks after iteration N's "
              "training (prompts prefixed with the good token); `seconds`: sampling + execution + training + "
              "evaluation."]
    report = output_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return plot, report


def _plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for key, label, style in (("rollout/pass_rate", "programs sampled in iteration N that pass (train tasks)", "o-"),
                              ("eval/pass@1", "pass@1 after iteration N, evaluation tasks (raw)", "s--"),
                              ("eval/pass@1/postprocessed", "pass@1 after iteration N (post-processed)", "^:")):
        points = [(r["iteration"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("LeTI iteration")
    ax.set_ylabel("pass rate")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
