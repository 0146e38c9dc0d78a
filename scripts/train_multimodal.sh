#!/usr/bin/env bash
# Trains the served weights: IPNet and every learned baseline with 6 modes and calibrated deviations, on the
# shipped recipe, from ../shared/data; fits the motion models' deviations; then regenerates models/MODEL_CARD.md.
#   models/weights/multimodal/seed{0,1,2}/: ipnet, gru, lstm, gru_nodt, ctgru (the service serves seed 0)
#   models/weights/multimodal_ethucy_loo/<scene>/seed0/: ETH/UCY leave-one-scene-out folds (IPNet, GRU, LSTM)
#   models/weights/motion_deviations.json: CV, CA and CTRV deviations (ipnet calibrate)
# The single-trajectory study of the card (ablations, the 10 Hz recipe) is scripts/train_all.sh. JOBS runs at
# once (default 1; JOBS=2 on 2 cores, each with one torch thread: about 75 minutes, of which two seeds side by
# side took 41). Extra arguments go to every `ipnet train` (e.g. --epochs 2 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
W=models/weights
JOBS=${JOBS:-1}
THREADS=$((JOBS > 1 ? 1 : 2))
ipnet calibrate
{
  for seed in 0 1 2; do
    echo "--recipe shipped --seeds $seed --out $W/multimodal"
  done
  for scene in eth hotel univ zara1 zara2; do
    echo "--recipe 10hz --corpus ethucy-loo:$scene --models ipnet,gru,lstm --epochs ${LOO_EPOCHS:-12} --out $W/multimodal_ethucy_loo/$scene"
  done
} | xargs -P "$JOBS" -I{} sh -c "ipnet train --modes 6 --models ipnet,gru,lstm,gru_nodt,ctgru --threads $THREADS --quiet {} $*"
ipnet card
