"""Deployment: everything that takes the pipeline off the laptop, apart from the sweep itself.

* :mod:`pipeline.deploy.manifests`: offline validation of the Kubernetes manifests under ``k8s/``
  (``make k8s-validate``);
* :mod:`pipeline.deploy.rayjob`: submits the sweep to a KubeRay cluster as a RayJob and waits for
  it (``make sweep-k8s``, the Kubeflow sweep step);
* :mod:`pipeline.deploy.kubeflow`: the Kubeflow pipeline, compiled to
  ``k8s/kubeflow/pipeline.yaml`` (``make pipeline``);
* :mod:`pipeline.deploy.local_cluster`: the sweep on a cluster of containers on this machine
  (``make cluster-up`` / ``sweep-cluster`` / ``cluster-down``), whose Ray job runs
  :mod:`pipeline.deploy.cluster_job` on the head;
* :mod:`pipeline.deploy.parts`: names, ports, images and server commands shared by that cluster
  and the manifests.

The sweep's own modules (:mod:`pipeline.run`, :mod:`pipeline.sweep`, ...) never import this
package: deployment calls the same ``clearrec`` CLI that runs on a laptop.
"""
