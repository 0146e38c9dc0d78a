#!/usr/bin/env bash
# Trains every shipped weight file from ../shared/data, then regenerates models/MODEL_CARD.md.
#   shipped models (models/weights/{ipnet,gru,lstm}.pt): corpus 'shipped' (AV2 held out), trained on degraded
#     copies of the streams (random rates, drops, jitter; no position noise), the same for all three
#   the same models trained on the recorded streams only (models/weights/clean/) and with position noise too
#     (models/weights/augmented/)
#   rates never seen in training: the three models on the 10 Hz data only, no augmentation
#     (models/weights/rate_10hz/), plus IPNet with the interval as an encoder input (rate_10hz/interval_input/)
#   IPNet ablations with the shipped recipe: log-spaced thermal time constants (ablation/ipnet.pt), the interval
#     as an encoder input (ablation/interval_input/), a readout that senses temperatures or switching
#     probabilities only (ablation/readout_temperature/, ablation/readout_p_switch/), the whole future instead of
#     a correction to CV (ablation/no_cv_prior/, with GRU)
#   ETH/UCY leave-one-scene-out folds (models/weights/ethucy_loo/<scene>/*.pt), and the same with the full
#     augmentation (models/weights/ethucy_loo_augmented/<scene>/*.pt)
# About an hour on 2 CPU cores. Extra arguments go to every `ipnet train` (e.g. --epochs 2 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
W=models/weights
SHIPPED=(--augment --augment-without-noise)
ipnet train --corpus shipped --models ipnet,gru,lstm "${SHIPPED[@]}" --quiet "$@"
ipnet train --corpus shipped --models ipnet,gru,lstm --out "$W/clean" --quiet "$@"
ipnet train --corpus shipped --models ipnet,gru,lstm --augment --out "$W/augmented" --quiet "$@"
ipnet train --corpus 10hz --models ipnet,gru,lstm --out "$W/rate_10hz" --quiet "$@"
ipnet train --corpus 10hz --models ipnet --ipnet-interval-input --out "$W/rate_10hz/interval_input" --quiet "$@"
ipnet train --corpus shipped --models ipnet --tau-spread "${SHIPPED[@]}" --out "$W/ablation" --quiet "$@"
ipnet train --corpus shipped --models ipnet --ipnet-interval-input "${SHIPPED[@]}" --out "$W/ablation/interval_input" \
  --quiet "$@"
for readout in temperature p_switch; do
  ipnet train --corpus shipped --models ipnet --ipnet-readout "$readout" "${SHIPPED[@]}" \
    --out "$W/ablation/readout_$readout" --quiet "$@"
done
ipnet train --corpus shipped --models ipnet,gru --no-cv-prior "${SHIPPED[@]}" --out "$W/ablation/no_cv_prior" \
  --quiet "$@"
# folds: the same budget for the three models of a fold (fewer epochs than the shipped models, for time)
for scene in eth hotel univ zara1 zara2; do
  ipnet train --corpus "ethucy-loo:${scene}" --models ipnet,gru,lstm --out "$W/ethucy_loo/${scene}" \
    --epochs "${LOO_EPOCHS:-12}" --quiet "$@"
  ipnet train --corpus "ethucy-loo:${scene}" --models ipnet,gru,lstm --augment \
    --out "$W/ethucy_loo_augmented/${scene}" --epochs "${LOO_EPOCHS:-12}" --quiet "$@"
done
ipnet card
