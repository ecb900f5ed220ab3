"""clear_core: the science of clearrec.

Datasets and preprocessing, feature encoders, the CLEAR projection, models, trainer and
metrics. PyTorch, NumPy and pyarrow only: nothing here imports Ray, MLflow or ``pipeline``.
"""

__version__ = "0.1.0"
