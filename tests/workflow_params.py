"""Print the params, inputs and outputs the workflow gives each stage, for each config file
given: ``python tests/workflow_params.py CONFIG...`` (a dry-run parse of the Snakefile
in the current directory; JSON on stdout). tests/test_liveness.py checks its mirror of the
rules (tests/liveness.py, STAGES) against this."""

import json
import sys
import types
from pathlib import Path
from typing import Any

from snakemake.api import SnakemakeApi
from snakemake.io import is_flagged
from snakemake.settings.types import ConfigSettings, OutputSettings, Quietness, ResourceSettings

ROOT = Path(__file__).resolve().parents[1]


def _value(item: Any, wildcards: types.SimpleNamespace) -> Any:
    # An input function comes wrapped as a file (snakemake.io's _IOFile and AnnotatedString).
    item = getattr(getattr(item, "_file", None), "callable", None) or item
    if callable(item):
        return item(wildcards)
    if isinstance(item, str):
        return item.format(**vars(wildcards))
    return item


def stages(configfile: str) -> dict[str, Any]:
    """Each rule's params, inputs and outputs for the config's first model."""
    with SnakemakeApi(OutputSettings(dryrun=True, quiet={Quietness.ALL})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(configfiles=[Path(configfile)]),
            snakefile=ROOT / "Snakefile",
            workdir=Path.cwd(),
        )._workflow
        model = next(iter(workflow.globals["MODELS"]))
        wildcards = types.SimpleNamespace(model=model)
        found = {}
        for rule in workflow.rules:
            inputs: dict[str, Any] = {}
            for name, item in rule.input._allitems():
                value = _value(item, wildcards)
                inputs.update(value if is_flagged(item, "unpack") else {name: value})
            found[rule.name] = {
                "params": {name: _value(item, wildcards) for name, item in rule.params._allitems()},
                "input": inputs,
                "output": {
                    name: str(item.apply_wildcards(vars(wildcards)))
                    for name, item in rule.output._allitems()
                },
            }
        return found


if __name__ == "__main__":
    print(json.dumps([stages(config) for config in sys.argv[1:]], default=repr))
