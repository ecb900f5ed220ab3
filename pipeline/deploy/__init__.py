"""Deployment: everything that takes the pipeline off the laptop, apart from the sweep itself.

* :mod:`pipeline.deploy.manifests`: offline validation of the Kubernetes manifests under ``k8s/``
  (``make k8s-validate``);
* :mod:`pipeline.deploy.rayjob`: submits the sweep to a KubeRay cluster as a RayJob and waits for
  it (``make sweep-k8s``, the Kubeflow sweep step);
* :mod:`pipeline.deploy.kubeflow`: the Kubeflow pipeline, compiled to
  ``k8s/kubeflow/pipeline.yaml`` (``make pipeline``).

The sweep's own modules (:mod:`pipeline.run`, :mod:`pipeline.sweep`, ...) never import this
package: deployment calls the same ``clearrec`` CLI that runs on a laptop.
"""
