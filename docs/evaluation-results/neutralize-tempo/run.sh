# bash run.sh CORPUS COND... : the adaptive recipe, seeds 2-6, each condition in turn
corpus=$1; shift
for c in "$@"; do for s in 2 3 4 5 6; do
  OMP_NUM_THREADS=1 PLAINSIGHT_DATA=/work/shared/data /work/main/.venv/bin/python adaptive_tempo.py $corpus $c $s 2>&1 | grep -E "test UAR|Error|error" | sed "s/^/$corpus $c s$s: /"
done; done
