"""Rebuild BENCHMARKS.md: the summary table (benchmarks/summary.md) followed by every results file.

    python benchmarks/collect.py
"""
from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["population", "scaling", "es_mnist", "rso", "rso_throughput", "rso_sharded", "rso_paper", "hybrid", "hybrid_sweep", "cluster",
         "rec_lra", "consequential", "grad_instructor", "cartpole", "cartpole_obsnorm", "cartpole_obsnorm_nowarmup", "es_hopper", "es_hopper_obsnorm", "es_hopper_obsnorm_seed1", "es_hopper_obsnorm_seed2", "es_hopper_obsnorm_seed1_400", "es_hopper_obsnorm_seed2_400", "es_hopper_seed1", "es_hopper_seed2", "es_hopper_seed1_400", "es_hopper_seed2_400", "es_throughput", "es_paired", "es_paired_full", "es_loops", "ray_floor", "es_gather", "es_tell", "es_tell_phases", "es_tell_pgpe", "es_tell_snes", "es_tell_pgpe_counter", "es_eval", "es_vs_evotorch", "pgpe", "pgpe_lr0.1",
         "es_mnist_pgpe", "es_mnist_pgpe_lowrank", "es_mnist_openai_es",
         "es_lowrank", "es_popscale", "es_cluster_nodes", "es_pool_overhead", "es_worker_update", "es_history", "chaos"]


def main() -> None:
    results = HERE / "results"
    files = sorted(results.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    parts = [(HERE / "summary.md").read_text().rstrip() + "\n"]
    for f in files:
        text = f.read_text().rstrip() + "\n"
        # images are referenced relative to results/; BENCHMARKS.md sits at the top level
        text = re.sub(r"\]\((?!http|/|benchmarks/)([^)]+\.png)\)", r"](benchmarks/results/\1)", text)
        text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)
        parts.append(f"\n---\n<!-- from benchmarks/results/{f.name} -->\n\n{text}")
    (HERE.parent / "BENCHMARKS.md").write_text("".join(parts))
    print(f"BENCHMARKS.md: summary + {len(files)} results files")


if __name__ == "__main__":
    main()
