#!/usr/bin/env bash
# Beauty 5-core with the official run's own MiniLM inputs (item embeddings, PCA table, similar-user table): SASRec,
# LLMInit and LLM-ESR side by side. Groups by the paper's 20% rule (the official ts_item 4 leaves a 5-core set with no
# tail item); groups only change the report, not the training. LLMInit and SASRec use hidden 128 (the paper's
# baseline size), so their PCA table is recomputed from the MiniLM vectors instead of the official 64-d one.
set -u
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
SEEDS=${SEEDS:-42}
OUT=${OUT:-runs/results}
B5="-r beauty5-official-inputs --set data.group_rule=pareto --set train.patience=5 --seeds $SEEDS --output-dir $OUT -q --resume"

esrkit train $B5 --set model.name=id --set model.hidden=128 --set embedding.pca_table= --name beauty5-minilm-id
esrkit train $B5 --set model.name=llminit --set model.hidden=128 --set embedding.pca_table= --name beauty5-minilm-llminit
esrkit train $B5 --name beauty5-minilm-llmesr
esrkit report $OUT/beauty5-minilm-id $OUT/beauty5-minilm-llminit $OUT/beauty5-minilm-llmesr --layout table1 \
  --out $OUT/reports/beauty5-minilm
