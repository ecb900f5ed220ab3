"""pipeline: orchestration of clear_core. Stages, Ray tasks and trials, Tune + Optuna sweeps,
MLflow tracking, the ``clearrec`` CLI and the Kubeflow pipeline definition."""
