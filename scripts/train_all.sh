#!/usr/bin/env bash
# Trains every shipped weight file from ../shared/data, then regenerates models/MODEL_CARD.md.
#   shipped models (models/weights/{ipnet,gru,lstm}.pt): corpus 'shipped', AV2 held out
#   IPNet ablation with log-spaced thermal time constants (models/weights/ablation/ipnet.pt)
#   IPNet and GRU predicting the whole future instead of a correction to CV (models/weights/ablation/no_cv_prior/)
#   ETH/UCY leave-one-scene-out folds (models/weights/ethucy_loo/<scene>/*.pt)
# About 40 minutes on 2 CPU cores. Extra arguments go to every `ipnet train` (e.g. --epochs 2 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
ipnet train --corpus shipped --models ipnet,gru,lstm --quiet "$@"
ipnet train --corpus shipped --models ipnet --tau-spread --out models/weights/ablation --quiet "$@"
ipnet train --corpus shipped --models ipnet,gru --no-cv-prior --out models/weights/ablation/no_cv_prior --quiet "$@"
# folds: the same budget for the three models of a fold (fewer epochs than the shipped models, for time)
for scene in eth hotel univ zara1 zara2; do
  ipnet train --corpus "ethucy-loo:${scene}" --models ipnet,gru,lstm --out "models/weights/ethucy_loo/${scene}" \
    --epochs "${LOO_EPOCHS:-12}" --quiet "$@"
done
ipnet card
