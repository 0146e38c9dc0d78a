#!/usr/bin/env bash
# Trains every weight file of the model card from ../shared/data, then regenerates models/MODEL_CARD.md.
#   models/weights/shipped/seed{0,1,2}/: every model of models/catalog.py (IPNet, the learned baselines, the
#     ablations) with the 'shipped' recipe; the service serves seed 0
#   models/weights/10hz/seed{0,1,2}/: the same models trained on 10 Hz data only (rates never seen in training)
#   models/weights/ethucy_loo/<scene>/seed0/: ETH/UCY leave-one-scene-out folds (IPNet, GRU, LSTM)
# One `ipnet train` per recipe and seed; JOBS of them run at once (default 1; JOBS=2 on 2 cores: about 80 minutes,
# each with one torch thread). Extra arguments go to every `ipnet train` (e.g. --epochs 2 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
W=models/weights
JOBS=${JOBS:-1}
THREADS=$((JOBS > 1 ? 1 : 2))
{
  for seed in 0 1 2; do
    echo "--recipe shipped --seeds $seed --out $W/shipped"
    echo "--recipe 10hz --seeds $seed --out $W/10hz"
  done
  for scene in eth hotel univ zara1 zara2; do
    echo "--recipe 10hz --corpus ethucy-loo:$scene --models ipnet,gru,lstm --epochs ${LOO_EPOCHS:-12} --out $W/ethucy_loo/$scene"
  done
} | xargs -P "$JOBS" -I{} sh -c "ipnet train --models all --threads $THREADS --quiet {} $*"
ipnet card
