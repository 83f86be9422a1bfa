"""Run records: what is redacted from them and from output notebooks."""

import math

from workbench.notebooks import records


def test_only_secret_parameters_are_redacted_from_the_output_notebook() -> None:
    """Found by fuzzing: `-p lr nan` was stored as '<redacted>' (NaN != NaN read as changed)."""
    params = {"lr": math.nan, "hf_token": "hf_abc", "label": "x"}
    source = '# Parameters\nlr = float(\'nan\')\nhf_token = "hf_abc"\nlabel = "x"\n'
    cell = {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": source}
    nb = {"metadata": {"papermill": {"parameters": params}}, "cells": [cell]}
    records.redact_notebook(nb)
    assert cell["source"].splitlines()[1:] == [
        "lr = float('nan')",
        f"hf_token = {records.REDACTED!r}",
        'label = "x"',
    ]
    assert math.isnan(nb["metadata"]["papermill"]["parameters"]["lr"])
