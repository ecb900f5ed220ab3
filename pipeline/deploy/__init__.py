"""Deployment: images, the local container cluster, KubeRay and Kubeflow (where the sweep ends)."""
