"""The learning study: does the feedback's *text* matter? LeTI's claims on the CPU testbed, with controls.

    python benchmarks/learning/run.py                                  # every arm, seeds 0 1 2 (hours)
    python benchmarks/learning/run.py --arms textual binary dummy_span --seeds 0 1
    python benchmarks/learning/run.py --quick --out /tmp/study         # the pipeline in a minute (CI)
    python benchmarks/learning/run.py --report_only --out benchmarks/learning/hidden_first_pooled \
        --pool benchmarks/learning/hidden_first benchmarks/learning/hidden_first_feedback_base   # both bases, one report

Every run is an ordinary `leti train` folder under `<out>/runs/<arm>-seed<k>`: stop the study at any
point and run the same command again; finished runs are kept, an interrupted one resumes. The report,
`<out>/RESULTS.md`, is rewritten from the folders after every run, with `results.csv` (every figure) and
the plots. Arms (each a `LetiConfig` option on top of the built-in default, `trainers/configs/default.yaml`):

- textual: LeTI (the interpreter's feedback after the bad token)
- binary: the reward token only (the paper's ablation)
- dummy_span: a constant, information-free span as long as the real feedback, in tokens (the same row lengths)
- shuffled_feedback: real feedback from another failed program of the same iteration
- positives_only: passing programs only, no tokens (rejection-sampling fine-tuning; but it samples and
  evaluates with a good token whose embedding it never trained)
- rejection_sampling: the clean control of positives_only: passing programs only, each with the good token it
  is sampled and evaluated with, for the same optimizer steps (`--feedback_mode binary --max_failures_per_prompt 0`)
- sft_reference: the tasks' reference programs instead of the samples, for the same optimizer steps
  (`--train_on references`: supervised fine-tuning on ground truth, the paper's comparison)
- textual_pretrain_mix: LeTI with the pre-training mix (1:1 optimizer steps), the corpus being the default
  model's own pre-training documents (regenerated exactly: the same generator and seed). Its 240 optimizer
  steps per iteration are 120 on LeTI rows and 120 on pre-training blocks (the paper keeps the LeTI steps
  and adds as many; that would double the training phase, over the budget of one run). The mix alternates
  steps by row order, so it trains on rows in order (`--train_sampling_strategy sequential`), where the
  default batches rows by length; its own baseline is therefore
- textual_sequential: LeTI with rows in order, without the mix
- textual_pretrain_mix_short: the same mix on 128-token pre-training blocks (`--pretrain_block_size 128`; the
  paper's blocks are the model's length, 256 tokens here), whose steps cost about half: the mix within the
  10-minute budget of one run, and in the default set of arms, where textual_pretrain_mix is asked for by name
- textual_medium, binary_medium, dummy_span_medium: textual, binary and dummy_span with the ~5 M-parameter
  default model (`--default_model_size medium`), 4 samples per prompt and 80 optimizer steps per iteration
  (near the 10-minute budget of one run); not in the default set of arms (name them)

The informative testbed: `<arm>_hidden` is `<arm>` on LETI-Arith with `test_order` hidden_first (the hidden
asserts run before the prompt's own, so a failure's feedback names an input and an expected value the prompt
never showed, as on MBPP): textual_hidden, binary_hidden, dummy_span_hidden, shuffled_feedback_hidden and
rejection_sampling_hidden, compared with textual_hidden. Asked for by name.

- textual_guided (and textual_guided_hidden): LeTI with reward-token guidance, w = 1 (`--guidance_weight 1.0`):
  rollouts from iteration 2 on and the good-token evaluation sample from log p(good) + w (log p(good) - log p(bad)).
- textual_last (and textual_last_hidden): the feedback span after the program (`--sequence_order feedback_last`),
  so that the prompt follows the reward token on failing rows too, and the token alone must tell them apart.
- textual_lr3e-4 (and textual_lr3e-4_hidden): LeTI at learning rate 3e-4 (the default: 1e-3).
- textual_failweight0.25 (and textual_failweight0.25_hidden): failing programs' rows weigh a quarter of a
  passing row's in the loss (`--failure_loss_weight 0.25`; the paper: 1), for the same optimizer steps.

The base model: `--base_corpus feedback` starts every arm from the default model pre-trained also on execution
feedback (`--default_model_corpus feedback`, docs/cpu_testbed.md), the one that can read it; keep one `--out`
per base (`benchmarks/learning/hidden_first/` for the plain base, `hidden_first_feedback_base/` for this one).

Every run is also evaluated under the bad token and under none (does the condition separate?), and with one
refinement turn after each failed attempt, its feedback shown as input (the repair rate).

Statistics: differences are paired by seed, with Student-t 95% intervals over the seeds (with 3 seeds the
t quantile is 4.30: honest, and wide; `--pool` makes each (base model, seed) pair a unit, across studies); beside each held-out difference, the binomial standard error of one
evaluation on 400 tasks. Steps-to-reach is read per seed, with its spread.

Forgetting, for every arm (`forgetting.json` in each run folder, computed after the run): the language-model
loss of each iteration's model (iteration 0: the base model) on a held-out slice of the pre-training stream
(the 1,000 documents that follow the ones the model was pre-trained on), and the sampled pass rate on the
single-step tasks (what the base model was pre-trained to do) among each iteration's rollouts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MEDIUM = ["--default_model_size", "medium", "--num_generations_per_prompt", "4", "--max_steps", "80"]
ARMS = {
    "textual": [],
    "binary": ["--feedback_mode", "binary"],
    "dummy_span": ["--feedback_mode", "dummy"],
    "shuffled_feedback": ["--feedback_mode", "shuffled"],
    "positives_only": ["--feedback_mode", "none"],
    "rejection_sampling": ["--feedback_mode", "binary", "--max_failures_per_prompt", "0"],
    "sft_reference": ["--train_on", "references"],
    "textual_pretrain_mix": ["--pretrain_dataset", "{corpus}", "--pretrain_text_field", "text",
                             "--train_sampling_strategy", "sequential"],
    # the same mix on 128-token pre-training blocks: each pre-training step costs about half, to fit the budget
    "textual_pretrain_mix_short": ["--pretrain_dataset", "{corpus}", "--pretrain_text_field", "text",
                                   "--train_sampling_strategy", "sequential", "--pretrain_block_size", "128"],
    "textual_sequential": ["--train_sampling_strategy", "sequential"],
    # the same question at ~5 M parameters (--default_model_size medium: its own cached model), within the
    # same 10-minute budget per run: a training step costs ~4.7x the small model's, so half the samples per
    # prompt and a third of the optimizer steps per iteration (the default recipe takes ~28 minutes there)
    "textual_medium": [*MEDIUM],
    "binary_medium": [*MEDIUM, "--feedback_mode", "binary"],
    "dummy_span_medium": [*MEDIUM, "--feedback_mode", "dummy"],
}
HIDDEN = ["--env_kwargs", '{"test_order": "hidden_first"}']  # the informative testbed (LETI-Arith's test_order)
ARMS["textual_guided"] = ["--guidance_weight", "1.0"]  # reward-token guidance at sampling and evaluation, w = 1
ARMS["textual_last"] = ["--sequence_order", "feedback_last"]  # the recipe search: the feedback after the program
ARMS["textual_lr3e-4"] = ["--learning_rate", "3e-4"]  # and a smaller learning rate
ARMS["textual_failweight0.25"] = ["--failure_loss_weight", "0.25"]  # and failing rows at a quarter of the loss
# and the reward token just before the program, next to what it conditions (at the row's start, a 4-layer model
# carries it across the feedback and the prompt, and the condition separated nothing)
ARMS["textual_token_before_program"] = ["--reward_token_position", "before_program"]
ARMS.update({f"{arm}_hidden": [*ARMS[arm], *HIDDEN]
             for arm in ("textual", "binary", "dummy_span", "shuffled_feedback", "rejection_sampling", "textual_guided",
                         "textual_last", "textual_lr3e-4", "textual_failweight0.25", "textual_token_before_program")})
# asked for by name: the medium arms, and the mix on the paper's blocks (textual_pretrain_mix: 13-14 minutes a run)
DEFAULT_ARMS = ["textual", "binary", "dummy_span", "shuffled_feedback", "positives_only", "sft_reference",
                "textual_pretrain_mix_short", "textual_sequential"]
QUICK = ["--model_name_or_path", "tiny", "--num_iterations", "2", "--max_train_tasks", "12", "--max_eval_tasks", "6",
         "--num_generations_per_prompt", "2", "--max_steps", "3", "--max_new_tokens", "12", "--eval_max_new_tokens", "12"]
CONTRASTS = ("binary", "dummy_span", "shuffled_feedback", "positives_only", "rejection_sampling", "sft_reference",
             "textual_pretrain_mix", "textual_pretrain_mix_short", "textual_sequential", "binary_medium",
             "dummy_span_medium", "binary_hidden", "dummy_span_hidden", "shuffled_feedback_hidden",
             "rejection_sampling_hidden", "textual_guided", "textual_guided_hidden", "textual_last", "textual_last_hidden",
             "textual_lr3e-4", "textual_lr3e-4_hidden", "textual_failweight0.25", "textual_failweight0.25_hidden",
             "textual_token_before_program", "textual_token_before_program_hidden")
BASELINES = {"textual_pretrain_mix": "textual_sequential", "textual_pretrain_mix_short": "textual_sequential",
             "binary_medium": "textual_medium", "dummy_span_medium": "textual_medium",
             **{arm: "textual_hidden" for arm in CONTRASTS if arm.endswith("_hidden")}}  # else textual
HELDOUT_TASKS = {False: 400, True: 6}  # held-out tasks per evaluation (quick: --max_eval_tasks 6)
HELDOUT_DOCUMENTS = 1000  # the pre-training stream's next documents: never trained on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default=str(HERE), help="folder of runs/, RESULTS.md, results.csv and the plots")
    parser.add_argument("--quick", action="store_true", help="one seed, 2 iterations, a tiny model: the pipeline only")
    parser.add_argument("--report_only", action="store_true",
                        help="rewrite RESULTS.md, results.csv and the plots from the finished runs under --out; train nothing")
    parser.add_argument("--pool", nargs="+", metavar="OUT", default=None,
                        help="with --report_only: one report over the finished runs of several studies (one --out per "
                             "base model), each (base model, seed) an independent unit of the statistics")
    parser.add_argument("--base_corpus", choices=["programs", "feedback"], default="programs",
                        help="the default model every arm starts from: pre-trained on programs (the default), or also "
                             "on execution feedback (`--default_model_corpus feedback`); keep one --out per base")
    args = parser.parse_args()
    if args.quick:
        args.seeds = args.seeds[:1]
    out = Path(args.out)
    command = " ".join(["python", "benchmarks/learning/run.py", *sys.argv[1:]])
    if args.pool and not args.report_only:
        parser.error("--pool writes a report from finished runs: add --report_only")
    if args.report_only:
        if args.pool:
            sources = [Path(folder) for folder in args.pool]
            rows = pooled_rows(sources)
            arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
            out.mkdir(parents=True, exist_ok=True)
            write_results(out, arms, sorted({r["seed"] for r in rows}), command, args.quick, rows=rows, sources=sources)
        else:
            write_results(out, *finished_runs(out), command, args.quick)
        return 0
    for seed in args.seeds:  # seed-major: an interrupted study has every arm at the same number of seeds
        for arm in args.arms:
            run(out / "runs" / f"{arm}-seed{seed}", arm, seed, args.quick, args.base_corpus)
            write_results(out, *finished_runs(out), command, args.quick)
    return 0


def finished_runs(out: Path) -> tuple[list[str], list[int]]:
    """The arms (in ``ARMS`` order) and seeds of every finished run under ``out/runs``: the report covers
    them all, whichever command ran them (a study grows across invocations and days)."""
    done = [p.parent.name for p in (out / "runs").glob("*-seed*/study.json")]
    arms = [a for a in ARMS if any(name.rsplit("-seed", 1)[0] == a for name in done)]
    return arms, sorted({int(name.rsplit("-seed", 1)[1]) for name in done})


def run(folder: Path, arm: str, seed: int, quick: bool, base_corpus: str = "programs") -> None:
    """One `leti train` (resumed if interrupted; skipped if complete), its wall time, its compositional score,
    then its forgetting measures."""
    done = folder / "study.json"
    if not done.exists():
        train(folder, arm, seed, quick, base_corpus)
    if not (folder / "forgetting.json").exists():
        measure_forgetting(folder, quick, size="medium" if "medium" in ARMS[arm] else "small")


def train(folder: Path, arm: str, seed: int, quick: bool, base_corpus: str = "programs") -> None:
    done = folder / "study.json"
    corpus = folder.parent / ("pretraining-corpus-quick" if quick else "pretraining-corpus")
    if "{corpus}" in ARMS[arm] and not corpus.exists():
        write_pretraining_corpus(corpus, quick)
    argv = [sys.executable, "-m", "trainers.cli", "train", "--output_dir", str(folder), "--seed", str(seed),
            "--eval_extra_conditions", "bad,none",  # does the reward token separate? (one greedy evaluation each)
            "--eval_max_turns", "2",  # and can the model use feedback as input? (a refinement turn)
            *[a.replace("{corpus}", str(corpus)) for a in ARMS[arm]], *(QUICK if quick else []),
            *(["--default_model_corpus", base_corpus] if base_corpus != "programs" else [])]
    start = time.monotonic()
    print(f"{arm} seed {seed}: {' '.join(argv[3:])}", flush=True)
    subprocess.run(argv, cwd=REPO, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # progress as it happens, into a log too
    wall = time.monotonic() - start
    last = max(int(p.name.split("-")[1]) for p in folder.glob("iteration-*") if (p / "COMPLETE").exists())
    environment = ARMS[arm][ARMS[arm].index("--env_kwargs"):][:2] if "--env_kwargs" in ARMS[arm] else []
    scored = subprocess.run([sys.executable, "-m", "trainers.cli", "eval", "--model", str(folder / f"iteration-{last}" / "model"),
                             "--env", "LETI-Arith", "--split", "compositional", "--num_samples", "1", "--k", "1",
                             "--temperature", "0", "--max_new_tokens", "24", *environment,
                             *(["--max_tasks", "6"] if quick else [])],
                            cwd=REPO, check=True, capture_output=True, text=True)
    compositional = json.loads(scored.stdout)["pass@1"]
    done.write_text(json.dumps({"arm": arm, "seed": seed, "base_corpus": base_corpus, "wall_s": round(wall, 1),
                                "compositional_pass@1": compositional}))


def pretraining_stream(quick: bool):
    """The default model's pre-training documents, in order (``trainers.default_model``: seed 0, 800 steps
    of 64), then the documents that would have come next."""
    from trainers.default_model import PRETRAIN_STEPS, pretraining_example

    rng = random.Random(0)
    seen = 200 if quick else PRETRAIN_STEPS * 64
    return [pretraining_example(rng) for _ in range(seen)], [pretraining_example(rng) for _ in range(
        50 if quick else HELDOUT_DOCUMENTS)]


def write_pretraining_corpus(folder: Path, quick: bool) -> None:
    """The documents as the default model saw them: each followed by its end-of-text token (the mix
    concatenates documents into blocks with no separator of its own, as the authors' code does)."""
    import datasets

    from trainers.default_model import EOS

    documents, _ = pretraining_stream(quick)
    documents = [d + EOS for d in documents]
    tmp = folder.with_name(folder.name + ".tmp")
    datasets.disable_progress_bars()  # a one-second save: its bar says nothing
    datasets.Dataset.from_dict({"text": documents}).save_to_disk(str(tmp))
    os.replace(tmp, folder)


def measure_forgetting(folder: Path, quick: bool, size: str = "small") -> None:
    """``forgetting.json``: per iteration, the model's mean token loss on the held-out pre-training documents
    (iteration 0: the base model) and the single-step tasks' sampled pass rate (iteration k: the rollouts
    the model after k - 1 iterations sampled; so they start at iteration 1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    import leti_env

    transformers_logging.disable_progress_bar()
    from trainers.rollouts import load_rollouts

    config = json.loads((folder / "config.json").read_text())
    name = config.get("model_name_or_path") or "default"
    if config.get("base_model"):  # the default model the run started from, as its config.json records it
        base = config["base_model"]["path"]
    elif name == "default":
        from trainers.default_model import default_model_path

        base = default_model_path(size=size)
    else:
        from trainers.tiny import tiny_model_path

        base = tiny_model_path(name)
    _, heldout = pretraining_stream(quick)
    single_step = {t.task_id for t in leti_env.load_tasks("LETI-Arith", "train") if t.metadata.get("num_steps") == 1}
    models = {0: base, **{int(p.name.split("-")[1]): p / "model" for p in folder.glob("iteration-*")
                          if (p / "COMPLETE").exists()}}
    measures: dict[int, dict] = {}
    torch.manual_seed(0)
    for iteration, path in sorted(models.items()):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(heldout), 64):
                texts = [d + tokenizer.eos_token for d in heldout[start:start + 64]]
                batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
                logits = model(**batch).logits[:, :-1]
                targets = labels[:, 1:]
                losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                                           ignore_index=-100, reduction="sum")
                total += float(losses)
                count += int((targets != -100).sum())
        measures[iteration] = {"heldout_lm_loss": round(total / count, 4)}
        rollouts_dir = folder / f"iteration-{iteration}" / "rollouts"
        if iteration > 0 and rollouts_dir.exists():
            single = [r for r in load_rollouts(rollouts_dir) if r.task_id in single_step]
            if single:
                measures[iteration]["single_step_sampled_pass_rate"] = round(sum(r.reward for r in single) / len(single), 4)
    (folder / "forgetting.json").write_text(json.dumps(measures, indent=1) + "\n")


def rows_of(out: Path, arms, seeds) -> list[dict]:
    rows = []
    for arm in arms:
        for seed in seeds:
            folder = out / "runs" / f"{arm}-seed{seed}"
            if not (folder / "study.json").exists():
                continue
            study = json.loads((folder / "study.json").read_text())
            forgetting = json.loads((folder / "forgetting.json").read_text()) if (folder / "forgetting.json").exists() else {}
            elapsed = 0.0  # the run's own phases so far (sampling, execution, training, evaluation)
            for line in (folder / "metrics.jsonl").read_text().splitlines():
                m = json.loads(line)
                lost = forgetting.get(str(m["iteration"]), {})
                seconds = sum(v for k, v in m.items() if k.startswith("time/"))
                elapsed += seconds
                rows.append({"arm": arm, "seed": seed, "base_corpus": study.get("base_corpus", "programs"),
                             "source": str(out), "iteration": m["iteration"],
                             "optimizer_steps": m.get("run/optimizer_steps", 0),
                             "sampled_pass_rate": m.get("rollout/pass_rate"), "heldout_pass@1": m.get("eval/pass@1"),
                             "heldout_pass@1_bad": m.get("eval/bad/pass@1"), "heldout_pass@1_none": m.get("eval/none/pass@1"),
                             "heldout_turn2_pass@1": m.get("eval/turn2/pass@1"), "repair_rate": m.get("eval/repair_rate"),
                             "seconds": seconds,
                             "cumulative_seconds": round(elapsed, 1),
                             "run_wall_s": study["wall_s"], "compositional_pass@1": study["compositional_pass@1"],
                             "heldout_lm_loss": lost.get("heldout_lm_loss"),
                             "single_step_sampled_pass_rate": lost.get("single_step_sampled_pass_rate")})
    return rows


ROW_FIELDS = ("arm", "seed", "base_corpus", "source", "iteration", "optimizer_steps", "sampled_pass_rate", "heldout_pass@1",
              "heldout_pass@1_bad", "heldout_pass@1_none", "heldout_turn2_pass@1", "repair_rate", "seconds",
              "cumulative_seconds", "run_wall_s", "compositional_pass@1", "heldout_lm_loss",
              "single_step_sampled_pass_rate")  # rows_of's columns; an older results.csv lacks some


def pooled_rows(sources: list[Path]) -> list[dict]:
    """The finished runs of several studies (one per base model) as one set of rows, each run's seed renamed
    ``<base corpus>/<seed>``: a (base model, seed) pair is the unit that differences are paired on and that
    the Student-t intervals count, so the spread between base models is part of the interval."""
    rows = []
    for source in sources:  # its runs, or else its results.csv (a study's committed figures)
        found = rows_of(source, *finished_runs(source)) if (source / "runs").is_dir() else _read_csv(source / "results.csv")
        if not found:
            raise SystemExit(f"{source} has no finished runs and no results.csv: pool the --out folders of studies")
        for row in found:
            label = row.get("base_corpus") or ("feedback" if "feedback" in source.name else "programs")
            rows.append({**dict.fromkeys(ROW_FIELDS), **row, "seed": f"{label}/{row['seed']}", "source": str(source)})
    if len({(r["arm"], r["seed"]) for r in rows}) != len({(r["arm"], r["seed"], r["source"]) for r in rows}):
        raise SystemExit("two pooled studies have runs of the same arm, seed and base model: pool one study per base")
    return rows


def _read_csv(path: Path) -> list[dict]:
    """``results.csv`` back as ``rows_of`` wrote it: numbers as numbers, empty cells as None."""
    def value(text: str):
        if text == "":
            return None
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def final(rows, arm, measure):
    """{seed: the last iteration's value} of one arm."""
    last: dict[int, tuple[int, float]] = {}
    for r in rows:
        if r["arm"] == arm and r[measure] is not None and r["iteration"] >= last.get(r["seed"], (-1, 0))[0]:
            last[r["seed"]] = (r["iteration"], r[measure])
    return {seed: value for seed, (_, value) in last.items()}


def at_iteration(rows, arm, measure, iteration):
    """{seed: the value at ``iteration``} of one arm (seeds that reached it)."""
    return {r["seed"]: r[measure] for r in rows
            if r["arm"] == arm and r["iteration"] == iteration and r[measure] is not None}


# Student-t 0.975 quantiles by degrees of freedom (1-30); beyond, the normal's 1.96 is within 2%
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def paired_difference(a: dict, b: dict) -> tuple[float, float, float]:
    """Mean of a - b over the seeds both have, and its Student-t 95% interval (paired by seed; n - 1
    degrees of freedom). One seed: the interval is that seed's value (no spread to read)."""
    import math
    import statistics

    common = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in common]
    if not diffs:
        return float("nan"), float("nan"), float("nan")
    mean = sum(diffs) / len(diffs)
    if len(diffs) == 1:
        return mean, mean, mean
    half = (T975[len(diffs) - 2] if len(diffs) - 1 <= len(T975) else 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def binomial_se(p: float, tasks: int) -> float:
    """Standard error of one pass@1 evaluation of ``tasks`` tasks at rate ``p`` (each task passes or not)."""
    return (max(p, 0.0) * max(1.0 - p, 0.0) / tasks) ** 0.5 if tasks else float("nan")


def mix_at_equal_leti_steps(rows, mix: str = "textual_pretrain_mix", baseline: str = "textual_sequential") -> list[str]:
    """The pre-training mix against its baseline after the same number of optimizer steps on LeTI rows.

    Half of the mix's optimizer steps are pre-training steps (its rows alternate step by step, and 240 steps
    stay within one epoch of them), so its iteration 2k has taken as many LeTI steps as the baseline's
    iteration k (its single-step pass rate is sampled from that model, in the next iteration). Comparing at
    equal iterations would credit the mix with forgetting less merely because it
    trained less on LeTI rows."""
    last = max((r["iteration"] for r in rows if r["arm"] == mix), default=0)
    if not any(r["arm"] == baseline for r in rows) or last < 2:
        return []
    lines = ["", f"The pre-training mix at equal LeTI steps: {mix} at iteration 2k against {baseline} at iteration k "
             "(half of the mix's optimizer steps are pre-training steps; the single-step rate is that model's, sampled in "
             "the next iteration); mean over the seeds both have, and "
             f"{baseline} − {mix} with its Student-t 95% interval over seeds (positive: the mix is better on LM loss, "
             "worse on the pass rates):", "",
             "| LeTI steps | iterations | seeds | held-out pass@1 | held-out LM loss | single-step sampled pass rate |",
             "| --- | --- | --- | --- | --- | --- |"]
    for k in range(1, last // 2 + 1):
        cells, seeds = [], set()
        for measure, offset in (("heldout_pass@1", 0), ("heldout_lm_loss", 0), ("single_step_sampled_pass_rate", 1)):
            # an iteration's rollouts come from the previous iteration's model: the model after 2k (k) is sampled
            # in iteration 2k + 1 (k + 1)
            ours, theirs = at_iteration(rows, mix, measure, 2 * k + offset), at_iteration(rows, baseline, measure, k + offset)
            common = sorted(set(ours) & set(theirs))
            seeds |= set(common)
            if not common:
                cells.append("-")
                continue
            diff, low, high = paired_difference(theirs, ours)
            cells.append(f"{sum(ours[s] for s in common) / len(common):.3f} vs "
                         f"{sum(theirs[s] for s in common) / len(common):.3f} ({diff:+.3f} [{low:+.3f}, {high:+.3f}])")
        steps = [r["optimizer_steps"] for r in rows if r["arm"] == baseline and r["iteration"] == k]
        if seeds and steps:
            lines.append(f"| {sum(steps) / len(steps):.0f} | {2 * k} vs {k} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def repair_table(rows, arms) -> list[str]:
    """Feedback as the model's input: at the last iteration, held-out pass@1 after one refinement turn and the
    repair rate (the share of failed first attempts the second fixed), and each arm's repair rate against
    its baseline's (paired by seed, Student-t 95%)."""
    lines = []
    for arm in arms:
        repair = final(rows, arm, "repair_rate")
        if not repair:
            continue
        baseline = BASELINES.get(arm, "textual")
        mean, low, high = paired_difference(final(rows, baseline, "repair_rate"), repair) if baseline != arm else (
            float("nan"),) * 3
        lines.append(f"| {arm} | {len(repair)} | {_spread(final(rows, arm, 'heldout_pass@1'))} | "
                     f"{_spread(final(rows, arm, 'heldout_turn2_pass@1'))} | {_spread(repair)} | "
                     + ("-" if mean != mean else f"{baseline}: {mean:+.3f} [{low:+.3f}, {high:+.3f}]") + " |")
    if not lines:
        return []
    return ["", "Feedback as input, at the last iteration: held-out pass@1 on the first attempt and after one "
            "refinement turn (the failed attempt and its feedback shown again), the repair rate, and the "
            "baseline's repair rate minus the arm's (mean over seeds, range; Student-t 95%):", "",
            "| arm | seeds | first attempt | after a refinement turn | repair rate | baseline − arm |",
            "| --- | --- | --- | --- | --- | --- |", *lines]


def condition_gaps(rows, arms) -> list[str]:
    """Held-out pass@1 under the good token minus under the bad token, and minus under no token, at the last
    iteration (paired by seed, Student-t 95%): a recipe whose condition does not separate cannot show that
    the model conditions on what the feedback taught it."""
    lines = []
    for arm in arms:
        good = final(rows, arm, "heldout_pass@1")
        gaps = []
        for other in ("bad", "none"):
            theirs = final(rows, arm, f"heldout_pass@1_{other}")
            mean, low, high = paired_difference(good, theirs)
            gaps.append("-" if mean != mean else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        if any(g != "-" for g in gaps):
            lines.append(f"| {arm} | {len(good)} | " + " | ".join(gaps) + " |")
    if not lines:
        return []
    return ["", "The condition at the last iteration: held-out pass@1 under `<|good|>` minus under `<|bad|>`, and "
            "minus under no token (mean over seeds, Student-t 95%):", "",
            "| arm | seeds | good − bad | good − none |", "| --- | --- | --- | --- |", *lines]


def steps_to_reach(rows, arm, measure, level) -> float | None:
    """The optimizer steps at which ``arm``'s mean curve (over its seeds, iteration by iteration) first reaches
    ``level``; None if it never does."""
    by_iteration: dict[int, list[dict]] = {}
    for r in rows:
        if r["arm"] == arm and r[measure] is not None:
            by_iteration.setdefault(r["iteration"], []).append(r)
    for iteration in sorted(by_iteration):
        group = by_iteration[iteration]
        if sum(r[measure] for r in group) / len(group) >= level - 1e-12:
            return sum(r["optimizer_steps"] for r in group) / len(group)
    return None


def steps_to_reach_per_seed(rows, arm, measure, level) -> dict[int, float | None]:
    """{seed: the optimizer steps at which that seed's curve first reaches ``level``, or None (never)}."""
    out: dict[int, float | None] = {}
    for seed in sorted({r["seed"] for r in rows if r["arm"] == arm}):
        curve = sorted((r["iteration"], r["optimizer_steps"], r[measure]) for r in rows
                       if r["arm"] == arm and r["seed"] == seed and r[measure] is not None)
        out[seed] = next((steps for _, steps, value in curve if value >= level - 1e-12), None)
    return out


def base_models(*outs: Path) -> list[str]:
    """A line naming the base model(s) the runs under ``outs`` started from (folder name, corpus, weights sha256)."""
    seen = {}
    for config in (p for out in outs for p in (out / "runs").glob("*-seed*/config.json")):
        base = json.loads(config.read_text()).get("base_model") or {}
        if base:
            seen[base["sha256"]] = f"`{Path(base['path']).name}` ({base.get('corpus', 'programs')} corpus, " \
                                   f"model.safetensors sha256 {base['sha256'][:12]})"
    return [f"Base model: {', '.join(sorted(seen.values()))}.", ""] if seen else []


def write_results(out: Path, arms, seeds, command: str, quick: bool, rows: list[dict] | None = None,
                  sources: list[Path] | None = None) -> None:
    """``RESULTS.md``, ``results.csv`` and the plots under ``out``: from the finished runs under ``out/runs``, or
    from ``rows`` read from the studies ``sources`` (``--pool``)."""
    rows = rows_of(out, arms, seeds) if rows is None else rows
    if not rows:
        return
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    small = [a for a in arms if not a.endswith("_medium")]
    medium = [a for a in arms if a.endswith("_medium")]  # another model: their own plots
    plots = [plot(out, rows, group, measure, suffix, x) for group, suffix in ((small, ""), (medium, "_medium")) if group
             for measure, x in (("heldout_pass@1", "optimizer_steps"), ("sampled_pass_rate", "optimizer_steps"),
                                ("heldout_pass@1", "cumulative_seconds"))]
    lines = [f"# The learning study{' (quick: the pipeline only, no scientific result)' if quick else ''}", "",
             (f"Every finished run under `runs/` (arms {', '.join(arms)}; seeds {', '.join(map(str, seeds))}); the "
              if sources is None else
              f"The finished runs of the studies under {', '.join(f'`{_shown(s)}/`' for s in sources)}, pooled: each "
              f"(base model, seed) pair is one unit, `<base corpus>/<seed>` (arms {', '.join(arms)}; units "
              f"{', '.join(map(str, seeds))}); the ")
             + f"study's command is `python benchmarks/learning/run.py [--arms ...] [--seeds ...]`, and this report was "
             f"last written by `{command}`, {_versions()}.", "",
             *base_models(*(sources or [out])),
             "| arm | seeds | final sampled pass rate | final held-out pass@1 | compositional pass@1 | wall per run (mean, "
             "range) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for arm in arms:
        sampled, held = final(rows, arm, "sampled_pass_rate"), final(rows, arm, "heldout_pass@1")
        comp = {r["seed"]: r["compositional_pass@1"] for r in rows if r["arm"] == arm}
        walls = {r["seed"]: r["run_wall_s"] for r in rows if r["arm"] == arm}
        if held:
            lines.append(f"| {arm} | {len(held)} | {_spread(sampled)} | {_spread(held)} | {_spread(comp)} | "
                         f"{sum(walls.values()) / len(walls) / 60:.1f} min ({min(walls.values()) / 60:.1f}-"
                         f"{max(walls.values()) / 60:.1f}) |")
    iterations = sorted({r["iteration"] for r in rows})
    for measure, title in (("heldout_pass@1", "Held-out pass@1"), ("sampled_pass_rate", "Sampled pass rate"),
                           ("heldout_lm_loss", "Forgetting: language-model loss on held-out pre-training documents "
                                               "(nats per token; lower is better)"),
                           ("single_step_sampled_pass_rate", "Forgetting: sampled pass rate of the single-step tasks "
                                                             "(the rollouts each iteration starts from)")):
        lines += ["", f"{title} per iteration (mean over seeds):", "",
                  "| arm | " + " | ".join(str(i) for i in iterations) + " |", "| --- |" + " --- |" * len(iterations)]
        for arm in (a for a in arms if any(r["arm"] == a for r in rows)):
            cells = []
            for i in iterations:
                values = [r[measure] for r in rows if r["arm"] == arm and r["iteration"] == i and r[measure] is not None]
                cells.append(f"{sum(values) / len(values):.3f}" if values else "-")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    tasks = HELDOUT_TASKS[quick]
    lines += ["", "Differences at the last iteration (baseline − arm; the baseline is textual, except for the "
              "pre-training mix, whose baseline is textual_sequential: the same row order without the mix, and the "
              "`_hidden` and `_medium` arms, against textual_hidden and textual_medium; mean over the seeds both have, "
              "paired by seed, with its Student-t 95% interval over seeds; with one seed the interval is that seed's "
              f"value). `± se`: the binomial standard error of the difference of two single evaluations on {tasks} "
              "tasks, the noise of the measurement itself. A positive language-model-loss difference means the arm "
              "forgot less. The last column is held-out pass@1 at iteration 3, where the arms' early differences show:", "",
              "| arm | baseline | seeds | held-out pass@1 | sampled pass rate | held-out LM loss | held-out pass@1, iteration 3 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for arm in (a for a in CONTRASTS if a in arms):
        baseline = BASELINES.get(arm, "textual")
        if baseline not in arms:
            continue
        common = set(final(rows, baseline, "heldout_pass@1")) & set(final(rows, arm, "heldout_pass@1"))
        if not common:
            continue
        cells = []
        for measure in ("heldout_pass@1", "sampled_pass_rate", "heldout_lm_loss"):
            ours, theirs = final(rows, baseline, measure), final(rows, arm, measure)
            mean, low, high = paired_difference(ours, theirs)
            cell = "-" if mean != mean else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
            if measure == "heldout_pass@1" and mean == mean:
                both = sorted(set(ours) & set(theirs))
                p, q = (sum(d[s] for s in both) / len(both) for d in (ours, theirs))
                cell += f" ± {(binomial_se(p, tasks) ** 2 + binomial_se(q, tasks) ** 2) ** 0.5:.3f}"
            cells.append(cell)
        mean, low, high = paired_difference(*(at_iteration(rows, a, "heldout_pass@1", 3) for a in (baseline, arm)))
        cells.append("-" if mean != mean else f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append(f"| {arm} | {baseline} | {len(common)} | " + " | ".join(cells) + " |")
    lines += condition_gaps(rows, arms)
    lines += repair_table(rows, arms)
    for mix in ("textual_pretrain_mix", "textual_pretrain_mix_short"):
        lines += mix_at_equal_leti_steps(rows, mix)
    lines += ["", "Optimizer steps to reach the reference arm's mean held-out pass@1 at iterations 3 and 6 (the "
              "paper's sample-efficiency ratio; the reference is textual, or textual_medium / textual_hidden for those "
              "arms): read on each seed's own curve (mean, and each seed's value in seed order; `never`: not within the "
              "run), and, after the bar, on the seeds' mean curve with its ratio to the reference's:", "",
              "| arm | to iteration 3's | to iteration 6's |", "| --- | --- | --- |"]
    for arm in (a for a in arms if any(r["arm"] == a for r in rows)):
        cells = []
        reference = "textual_medium" if arm.endswith("_medium") else "textual_hidden" if arm.endswith("_hidden") else "textual"
        for iteration in (3, 6):
            levels = [r["heldout_pass@1"] for r in rows if r["arm"] == reference and r["iteration"] == iteration]
            if not levels:
                cells.append("-")
                continue
            level = sum(levels) / len(levels)
            per_seed = steps_to_reach_per_seed(rows, arm, "heldout_pass@1", level)
            reached = [v for v in per_seed.values() if v is not None]
            seeds = ", ".join("never" if v is None else f"{v:.0f}" for v in per_seed.values())
            on_mean = steps_to_reach(rows, arm, "heldout_pass@1", level)
            own = steps_to_reach(rows, reference, "heldout_pass@1", level)
            mean_curve = "never" if on_mean is None else f"{on_mean:.0f}" + (f" ({on_mean / own:.2f}x)" if own else "")
            cells.append((f"{sum(reached) / len(reached):.0f}" if reached else "never")
                         + f" ({seeds}) \\| {mean_curve}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    total = sum({(r["arm"], r["seed"]): r["run_wall_s"] for r in rows}.values())
    lines += ["", f"Study wall time so far: {total / 3600:.2f} h over {len({(r['arm'], r['seed']) for r in rows})} runs.",
              ""] + [f"![{p.stem}]({p.name})" for p in plots]
    notes = out / "NOTES.md"  # what the numbers above cannot say (caveats, reruns), kept by hand
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, rows, arms, measure, suffix: str = "", x: str = "optimizer_steps") -> Path:
    """``measure`` against ``x`` (optimizer steps, or the run's cumulative seconds), one line per arm: the
    mean over seeds, and their range shaded (by step; by wall time, the seeds' mean seconds per iteration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        by_iteration: dict[int, list[dict]] = {}
        for r in rows:
            if r["arm"] == arm and r[measure] is not None:
                by_iteration.setdefault(r["iteration"], []).append(r)
        if by_iteration:
            its = sorted(by_iteration)
            xs = [sum(r[x] for r in by_iteration[i]) / len(by_iteration[i]) for i in its]
            values = [[r[measure] for r in by_iteration[i]] for i in its]
            ax.plot(xs, [sum(v) / len(v) for v in values], marker="o", label=arm)
            ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], alpha=0.15)
    ax.set_xlabel("optimizer steps" if x == "optimizer_steps" else "wall time of the run's phases (s)")
    ax.set_ylabel(measure.replace("_", " "))
    ax.legend()
    fig.tight_layout()
    name = measure.replace("@", "_at_") + ("" if x == "optimizer_steps" else "_vs_wall_time")
    path = out / f"{name}{suffix}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _shown(path: Path) -> str:
    """A study folder as the report names it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _spread(values: dict) -> str:
    if not values:
        return "-"
    v = list(values.values())
    mean = sum(v) / len(v)
    return f"{mean:.3f} ({min(v):.3f}-{max(v):.3f})" if len(v) > 1 else f"{mean:.3f}"


def _versions() -> str:
    from importlib.metadata import version

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    packages = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "peft"))
    return f"leti {commit or '?'}, Python {platform.python_version()}, {packages}, {os.cpu_count()} CPUs"


if __name__ == "__main__":
    sys.exit(main())
