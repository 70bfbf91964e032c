# Run lock: one run at a time in this directory (repotune/runlock.py). Taken while the Snakefile
# is read, before Snakemake looks at a file: a second run stops here, before its DAG could meet
# the first run's outputs half-replaced. Every job's shell holds it too (a shell prefix), so a
# job that outlives a killed Snakemake keeps the next run out until it ends. Dry runs only read.
# A file of its own, so that tests/test_runlock.py runs this very code with a job of its own.
import sys

from repotune.errors import InputError
from repotune.runlock import lock_run

if not workflow.output_settings.dryrun:
    try:
        lock_run(workflow.is_main_process, shell)
    except InputError as error:
        sys.exit(f"repotune error: {error}")
