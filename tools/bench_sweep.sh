#!/bin/bash
# bench_sweep.sh MODEL [REPS] - wall time of 8 seeds x 1 step at 256x256 as one `sd --sweep seed=1-8` run
# vs 8 separate `sd -s N` runs, and whether the PNGs are byte-identical. Run from the repository root after
# building; writes into a temporary directory.
set -eu
M=${1:?usage: tools/bench_sweep.sh MODEL [REPS]}; REPS=${2:-3}; SD=$(pwd)/build/sd
dir=$(mktemp -d); cd "$dir"
for rep in $(seq "$REPS"); do
  rm -f ./*.png
  t0=$(date +%s.%N); "$SD" -m "$M" -p "a dog wearing a hat" -W 256 -H 256 --steps 1 --sweep seed=1-8 -o 'sw_{seed}.png' 2>/dev/null; t1=$(date +%s.%N)
  for s in 1 2 3 4 5 6 7 8; do "$SD" -m "$M" -p "a dog wearing a hat" -W 256 -H 256 --steps 1 -s $s -o sep_$s.png 2>/dev/null; done
  t2=$(date +%s.%N)
  same=0; for s in 1 2 3 4 5 6 7 8; do cmp -s sw_$s.png sep_$s.png && same=$((same + 1)); done
  echo "rep $rep: sweep $(echo "$t1 - $t0" | bc) s, separate $(echo "$t2 - $t1" | bc) s, identical $same/8"
done
rm -rf "$dir"
