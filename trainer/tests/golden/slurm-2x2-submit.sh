#!/usr/bin/env bash
# Submits the sweep's phases in order; a phase starts when the previous one succeeded.
set -euo pipefail
cd "$(dirname "$0")"
job=$(sbatch --parsable phase1.sh)
job=${job%%;*}
echo "submitted; the last phase is job $job"
