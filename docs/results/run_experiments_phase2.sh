#!/usr/bin/env bash
# Run alongside run_experiments.sh on a 2-core machine (one thread each): the Scientific ablations and baselines
# (steps 4-5 there, in reverse order, so the two queues meet in the middle; run directories are locked, so a run
# in progress in one queue fails fast in the other) and the cheaper teacher schedule.
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SEEDS=${SEEDS:-42}
OUT=${OUT:-runs/results}
FAST="--set train.patience=5"

esrkit train -r scientific-sasrec --set model.teacher_refresh=epoch --name scientific-llmesr-teacher-epoch \
  --seeds $SEEDS $FAST --output-dir $OUT -q --resume
declare -A ABL=([wo-co]="model.co_view=false" [wo-se]="model.se_view=false" [wo-sd]="model.alpha=0"
                [wo-share]="model.share_encoder=false" [wo-ca]="model.cross_attention=false"
                [adapter1]="model.adapter_layers=1" [random-init]="model.id_init=random" [wo-f]="model.freeze_semantic=false")
for name in wo-f random-init adapter1 wo-ca wo-share wo-sd wo-se wo-co; do
  esrkit train -r scientific-sasrec --set ${ABL[$name]} --name scientific-llmesr-$name --seeds $SEEDS $FAST \
    --output-dir $OUT -q --resume
done
for m in rlmrec melt cities; do
  esrkit train -r scientific-sasrec --set model.name=$m --set model.hidden=128 --name scientific-$m-sasrec \
    --seeds $SEEDS $FAST --output-dir $OUT -q --resume
done
