# clearrec: every target creates and reuses the project's virtual environment in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch that lies on these machines; installed first so that no other
# requirement pulls a multi-GB CUDA build. Override for another platform: make TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,extract,kfp
STAMP := $(VENV)/.installed-$(EXTRAS)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SYNTH_DIR ?= data/synthetic
SWEEP_CONFIG ?= configs/sweeps/default.yaml
MODEL ?= lightgcn

.PHONY: setup test test-slow test-cluster lint train sweep table plugin-table ui repro repro-update bench images sweep-k8s pipeline k8s-validate \
	cluster-up sweep-cluster cluster-down clean

# constraints.txt pins every other package to the versions the tests last passed with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q --constraint constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --constraint constraints.txt --no-deps "efficientnet-lite-pytorch>=0.1"
	touch $@

setup: $(STAMP) ## create .venv and install clearrec with its extras

test: setup ## the test suite (no GPU, no ../shared needed); long real-data runs are excluded
	$(BIN)/pytest -m "not slow and not cluster" -q

test-slow: setup ## long real-data runs (need ../shared/data)
	$(BIN)/pytest -m slow -q

lint: setup
	$(BIN)/ruff check clear_core pipeline tests benchmarks

$(SYNTH_DIR)/.complete: $(STAMP) configs/datasets/synthetic.yaml
	$(BIN)/clearrec data synth $(SYNTH_DIR)

train: $(SYNTH_DIR)/.complete ## train one model on the embedded default dataset
	$(BIN)/clearrec train $(SYNTH_DIR) --model $(MODEL) --out runs/train-$(MODEL)

SWEEP_ARGS ?=
sweep: setup ## the main job: extract -> filter/split -> Tune+Optuna sweep -> final test, in MLflow (SWEEP_ARGS="--model lightgcn")
	$(BIN)/clearrec sweep --config $(SWEEP_CONFIG) $(SWEEP_ARGS)

# The paper's Table 2 on TikTok: each model's sweep (its own grid, selected on validation, then
# final_seeds), cheapest first so that a stopped night keeps the most rows; then the table from
# MLflow. MENTOR and MMSSL are GPU jobs (configs/sweeps/tiktok.yaml says why): add them with
# TABLE_MODELS="... mentor mmssl" SWEEP_ARGS="--set train.device=cuda --set resources.gpu=0.5".
TABLE_CONFIG ?= configs/sweeps/tiktok.yaml
TABLE_MODELS ?= mf lightgcn bm3 layergcn lattice dualgnn mgcn slmrec clear freedom vbpr lgmrec mmgcn
TABLE_EXPERIMENT ?= clearrec-tiktok
TABLE_AGAINST ?= clear
table: setup ## every model's sweep on TABLE_CONFIG in turn, then `clearrec table` (test mean ± 95 % interval over seeds)
	@for model in $(TABLE_MODELS); do \
		echo "== $$model"; \
		$(BIN)/clearrec sweep --config $(TABLE_CONFIG) --model $$model --no-progress $(SWEEP_ARGS) || exit $$?; \
	done
	$(BIN)/clearrec table $(TABLE_EXPERIMENT) $(if $(TABLE_AGAINST),--against $(TABLE_AGAINST)) --out runs/table

# Each multimodal baseline at its Table-2 point on TikTok (selected on validation by `make table`,
# lr 1e-3; a model not in the file runs its YAML defaults), alone, + CLEAR's projection and +
# MRdIB, paired by seed; resumes from PLUGIN_OUT. Hours per model on 2 CPU cores (RESULTS.md).
PLUGIN_MODELS ?=
PLUGIN_OUT ?= runs/plugin_table.jsonl
PLUGIN_DATA ?= ../shared/data/tiktok
plugin-table: setup ## the plug-in table (benchmarks/plugin_table.py): PLUGIN_MODELS="mmgcn lattice" (default: every multimodal baseline)
	$(BIN)/python benchmarks/plugin_table.py --out $(PLUGIN_OUT) --data $(PLUGIN_DATA) \
		$(if $(PLUGIN_MODELS),--models $(PLUGIN_MODELS)) --base-grid benchmarks/results/table2_points_tiktok.json \
		--select-seeds 999 --seeds 7 42 123 2024 31337 --workers 2 --experiment clearrec-tiktok-plugins \
		--tracking-uri "$$($(BIN)/python -c 'from pipeline.tracking import resolve_tracking_uri; print(resolve_tracking_uri())')"

UI_PORT ?= 5000
ui: setup ## the MLflow UI over the default tracking store (a tracking server has its own UI)
	@$(BIN)/python -m pipeline.mlflow_logging || true
	@uri=$$($(BIN)/python -c 'from pipeline.tracking import resolve_tracking_uri; print(resolve_tracking_uri())'); \
	if [[ "$$uri" == http* ]]; then echo "MLflow UI: $$uri"; \
	else $(BIN)/mlflow ui --backend-store-uri "$$uri" --host 127.0.0.1 --port $(UI_PORT); fi

REPRO_ARGS ?=
repro: setup ## re-run the pinned configs/repro.yaml and compare with repro/reference.json (exit 1 on drift)
	$(BIN)/clearrec repro $(REPRO_ARGS)

repro-update: setup ## rewrite repro/reference.json on purpose: make repro-update REASON="why"
	@# $$REASON from the environment: make exports command-line variables, and quotes survive.
	@test -n "$$REASON" || { echo 'make repro-update needs REASON="why the numbers change"' >&2; exit 2; }
	$(BIN)/clearrec repro --update --reason "$$REASON" $(REPRO_ARGS)

bench: setup ## speed figures (see benchmarks/RESULTS.md)
	$(BIN)/python benchmarks/bench_epoch.py

# --- cluster: images, KubeRay sweep, Kubeflow pipeline, offline manifest checks (README "On a cluster")
IMAGE_REPO ?= clearrec
IMAGE_TAG ?= 0.1.0
IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)-cpu
GPU_IMAGE ?= $(IMAGE_REPO):$(IMAGE_TAG)-cuda
CONFIG ?= $(SWEEP_CONFIG)
RESULTS ?= s3://clearrec/sweeps/$(basename $(notdir $(CONFIG)))
K8S_NAMESPACE ?=
# A new RayJob per call; the sweep itself resumes from RESULTS when it is unfinished there.
RUN_ID ?= $(shell date -u +%m%d-%H%M%S)

images: ## build the images here: offline Debian base, CPU, launcher, PostgreSQL, S3 stand-in (IMAGES="cuda" for CUDA)
	IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(IMAGE_TAG) $(if $(PYTHON_IMAGE),PYTHON_IMAGE=$(PYTHON_IMAGE)) docker/images.sh $(IMAGES)

sweep-k8s: setup ## the sweep as a RayJob on the current kubectl context: make sweep-k8s IMAGE=... CONFIG=...
	@command -v kubectl >/dev/null || { echo "make sweep-k8s: kubectl not found; install it and point it at the cluster" >&2; exit 1; }
	@kubectl cluster-info >/dev/null 2>&1 || { echo "make sweep-k8s: no reachable cluster (kubectl cluster-info failed); check KUBECONFIG / the context" >&2; exit 1; }
	$(BIN)/python -m pipeline.deploy.rayjob submit --config $(CONFIG) --cpu-image $(IMAGE) --gpu-image $(GPU_IMAGE) \
		--results $(RESULTS) --run-id $(RUN_ID) $(if $(K8S_NAMESPACE),--namespace $(K8S_NAMESPACE))

pipeline: setup ## compile the Kubeflow pipeline to k8s/kubeflow/pipeline.yaml (images: configs/kubeflow.yaml)
	$(BIN)/python -m pipeline.deploy.kubeflow k8s/kubeflow/pipeline.yaml

# --- local container cluster: the sweep on Ray nodes in containers, MLflow on PostgreSQL, S3 (README)
CLUSTER_WORKERS ?= 2
CLUSTER := $(BIN)/python -m pipeline.deploy.local_cluster --workers $(CLUSTER_WORKERS) --image-repo $(IMAGE_REPO) --image-tag $(IMAGE_TAG)

cluster-up: setup ## start PostgreSQL, S3 (moto), MLflow, a Ray head and workers in containers (needs `make images`)
	docker/engine.sh up
	$(CLUSTER) up

sweep-cluster: cluster-up ## the sweep as a Ray job on the local cluster: make sweep-cluster CONFIG=... SWEEP_ARGS=...
	$(CLUSTER) sweep --config $(CONFIG) $(SWEEP_ARGS)

cluster-down: setup ## remove the cluster's containers; MLflow runs and studies stay in the volume (PURGE=1 removes them)
	$(CLUSTER) down $(if $(PURGE),--purge)

test-cluster: setup ## the cluster suite: builds the images it needs, starts the cluster, kills a worker and MLflow mid-sweep
	IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(IMAGE_TAG) $(if $(PYTHON_IMAGE),PYTHON_IMAGE=$(PYTHON_IMAGE)) docker/images.sh base cpu postgres s3
	$(BIN)/pytest -m cluster -q tests/pipeline/deploy

k8s-validate: setup ## validate k8s/ offline: strict core kinds, KubeRay CRD schemas, pod templates
	$(BIN)/python -m pipeline.deploy.manifests k8s

clean:
	rm -rf build/base-image runs ray_results mlruns mlartifacts mlruns.db optuna.db $(SYNTH_DIR)
