"""The MLflow tag names clearrec writes, in one place.

Tags under ``clearrec.`` are ours; ``mlflow.*`` tags are MLflow's own (run name, parent run,
source commit) and ``optuna.*`` / ``ray.*`` say where the study and the cluster of a sweep are.
Searches in the MLflow UI and in :meth:`pipeline.tracking.Tracker.find_run` use these names, so a
rename here is a change of the tracking schema.
"""

from __future__ import annotations

# What a run is and which sweep or trial it belongs to.
ROLE = "clearrec.role"  # "sweep", "trial", "replica" (a final seed), "evaluate", "plugin_table" or "plugin_run"
SWEEP_ID = "clearrec.sweep_id"
TRIAL_ID = "clearrec.trial_id"
MODEL = "clearrec.model"
SEED = "clearrec.seed"

# Provenance: the code, the data and the checkpoint a run used.
GIT_COMMIT = "clearrec.git_commit"
DATASET = "clearrec.dataset"
DATASET_FINGERPRINT = "clearrec.dataset_fingerprint"
CHECKPOINT = "clearrec.checkpoint"
CHECKPOINT_SHA256 = "clearrec.checkpoint_sha256"

# A sweep's parent run: where its parts live and how it ended.
TRACKING_URI = "clearrec.tracking_uri"
STORAGE_PATH = "clearrec.storage_path"
BEST_TRIAL = "clearrec.best_trial"
SELECTED_PARAMS = "clearrec.selected_params"  # the searched values of the best trial (JSON)
TRIALS_PREFIX = "clearrec.trials_"  # + complete / pruned / fail: how many trials ended so
DUPLICATE_PROPOSALS = "clearrec.duplicate_proposals"  # proposals not run: their point had run
GRID_POINTS = "clearrec.grid_points"  # a grid sweep's size,
GRID_SKIPPED = "clearrec.grid_skipped"  # how many of its points a num_samples cap left out,
GRID_SKIPPED_POINTS = "clearrec.grid_skipped_points"  # and which (JSON)

# A trial's child run.
DUPLICATE_OF = "clearrec.duplicate_of"  # an Optuna trial's user attribute: the trial it repeats
RETRIES = "clearrec.retries"
OUTCOME = "clearrec.outcome"  # FINISHED, PRUNED or FAILED
RAY_HOSTNAME = "clearrec.ray_hostname"  # the host its last result came from
RAY_HOSTNAMES = "clearrec.ray_hostnames"  # every host it ran on, in order (a retry may move it)
RAY_NODE_ID = "clearrec.ray_node_id"

# The plug-in table's runs (benchmarks/plugin_table.py): a parent per table, a child per row.
PLUGIN_TABLE = "clearrec.plugin_table"  # the parent's identity: a hash of its data, models and selection seeds
PLUGIN_RUN_KEY = "clearrec.plugin_run_key"  # a child's [method, params, seed] (JSON): each is logged once
PLUGIN_RUN_CONTENT = "clearrec.plugin_run_content"  # a digest of its figures and commit: a re-trained row replaces it
BASE_MODEL = "clearrec.base_model"  # the model a plug-in sits on
PLUG_IN = "clearrec.plug_in"  # "clear", "mrdib" or "none"
SELECTED = "clearrec.selected"  # "true" on the runs of a point validation selected, else "false"

# The reproducibility check's run (``clearrec.repro=true``, with .status, .device, .reason).
REPRO = "clearrec.repro"

# Other tools' namespaces.
MLFLOW_PARENT_RUN = "mlflow.parentRunId"
MLFLOW_SOURCE_COMMIT = "mlflow.source.git.commit"
OPTUNA_STORAGE = "optuna.storage"
OPTUNA_STUDY_NAME = "optuna.study_name"
RAY_ADDRESS = "ray.address"


def trials_count_tag(status: str) -> str:
    """The parent run's tag counting the trials that ended with ``status`` (COMPLETE, PRUNED, FAIL)."""
    return f"{TRIALS_PREFIX}{status.lower()}"
