#!/usr/bin/env bash
# One job per seed: three `confusion train --member i` jobs at once (as a SLURM array
# `confusion train ... --member $SLURM_ARRAY_TASK_ID` would run them). The first job creates
# the run, the others join it; an epoch is committed once all three have ended it.
set -euo pipefail
settings=(--data digits --arch mlp-s --members 3 --epochs 6 --lr 3e-3 --out runs/digits-jobs)
for member in 0 1 2; do
  confusion train "${settings[@]}" --member "$member" &
done
wait
confusion status runs/digits-jobs
confusion score runs/digits-jobs --out runs/digits-jobs.csv
