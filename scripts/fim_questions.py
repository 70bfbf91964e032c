"""Snakemake entry point of rule fim_questions; the logic is repotune.evaluate.fim_questions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))

from repotune.evaluate.fim_questions import FimQuestionSettings, build_fim_questions
from repotune.logs import run_job

run_job(
    snakemake.log[0],
    lambda: build_fim_questions(
        repo=snakemake.params.repo,
        test_commits=snakemake.input.test,
        output=snakemake.output.questions,
        report=snakemake.output.report,
        settings=FimQuestionSettings.from_config(snakemake.params.settings),
    ),
)
