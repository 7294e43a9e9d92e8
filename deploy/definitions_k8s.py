"""The graph's Definitions for Kubernetes: every step a k8s Job (dagster-k8s `k8s_job_executor`).

The heavy steps (`gpt_checkpoint`, `synthetic_sequences`) get a GPU node and more memory through
`per_step_k8s_config`; the other steps run with the small default requests of `step_k8s_config`.
Load it in the code location instead of `synehrgy_assets.definitions`:

    dagster api grpc -f deploy/definitions_k8s.py      # or the Helm chart's dagsterApiGrpcArgs

It adds two jobs, `synehrgy_end_to_end_k8s` and `synehrgy_retrain_k8s` (same selections as the
embedded jobs); everything else (assets, checks, resources, schedule, sensors) is the embedded
Definitions. The k8s run launcher and the PostgreSQL instance come from the Helm chart
(docs/deploy.md). Settings read from the environment when this module loads:

| variable | default | meaning |
|---|---|---|
| `SYNEHRGY_K8S_NAMESPACE` | `synehrgy` | namespace of the step Jobs |
| `SYNEHRGY_IMAGE` | empty (the run's image) | image of the step pods |
| `SYNEHRGY_K8S_GPU_RESOURCE` | `nvidia.com/gpu` | the extended resource requested by heavy steps |
| `SYNEHRGY_K8S_WORKSPACE_PVC` | `synehrgy-workspace` | a ReadWriteMany claim mounted at SYNEHRGY_HOME in every step |
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_k8s import k8s_job_executor

from synehrgy_assets.definitions import build_definitions
from synehrgy_assets.defs.jobs import end_to_end_job, retrain_job

HEAVY_STEPS = ("gpt_checkpoint", "synthetic_sequences")
WORKSPACE_MOUNT = "/workspace"

_gpu = os.environ.get("SYNEHRGY_K8S_GPU_RESOURCE", "nvidia.com/gpu")
_pvc = os.environ.get("SYNEHRGY_K8S_WORKSPACE_PVC", "synehrgy-workspace")

# Every step shares the workspace (DuckDB file, token arrays, checkpoints) on one volume.
_shared = {
    "container_config": {
        "volume_mounts": [{"name": "workspace", "mount_path": WORKSPACE_MOUNT}],
        "env": [{"name": "SYNEHRGY_HOME", "value": WORKSPACE_MOUNT}],
    },
    "pod_spec_config": {"volumes": [{"name": "workspace", "persistent_volume_claim": {"claim_name": _pvc}}]},
}


def _step_config(requests: dict, limits: dict, node_selector: dict | None = None, tolerations=None) -> dict:
    pod = dict(_shared["pod_spec_config"])
    if node_selector:
        pod["node_selector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    return {
        "container_config": {**_shared["container_config"], "resources": {"requests": requests, "limits": limits}},
        "pod_spec_config": pod,
    }


LIGHT_STEP_CONFIG = _step_config({"cpu": "1", "memory": "4Gi"}, {"memory": "8Gi"})
HEAVY_STEP_CONFIG = _step_config(
    {"cpu": "8", "memory": "32Gi", _gpu: "1"}, {"memory": "64Gi", _gpu: "1"},
    tolerations=[{"key": _gpu, "operator": "Exists", "effect": "NoSchedule"}],
)

K8S_EXECUTOR_CONFIG: dict = {
    "job_namespace": os.environ.get("SYNEHRGY_K8S_NAMESPACE", "synehrgy"),
    "max_concurrent": 4,
    "step_k8s_config": LIGHT_STEP_CONFIG,
    "per_step_k8s_config": {step: HEAVY_STEP_CONFIG for step in HEAVY_STEPS},
}
if os.environ.get("SYNEHRGY_IMAGE"):
    K8S_EXECUTOR_CONFIG["job_image"] = os.environ["SYNEHRGY_IMAGE"]

synehrgy_k8s_executor = k8s_job_executor.configured(K8S_EXECUTOR_CONFIG, name="synehrgy_k8s")


def check_per_step_keys(job: dg.JobDefinition, executor_config: dict) -> None:
    """Every `per_step_k8s_config` key must be a step of `job` (a renamed asset would silently lose its GPU)."""
    steps = {node.name for node in job.graph.nodes}
    unknown = sorted(set(executor_config.get("per_step_k8s_config", {})) - steps)
    if unknown:
        raise ValueError(f"per_step_k8s_config names steps that job {job.name!r} does not have: {unknown}; "
                         f"its steps are {sorted(steps)}")


end_to_end_k8s_job = dg.define_asset_job(
    name="synehrgy_end_to_end_k8s", selection=end_to_end_job.selection, executor_def=synehrgy_k8s_executor,
    description=f"{end_to_end_job.description} Each step a k8s Job; {', '.join(HEAVY_STEPS)} on a GPU node.",
)
retrain_k8s_job = dg.define_asset_job(
    name="synehrgy_retrain_k8s", selection=retrain_job.selection, executor_def=synehrgy_k8s_executor,
    description=f"{retrain_job.description} Each step a k8s Job; {', '.join(HEAVY_STEPS)} on a GPU node.",
)

defs = dg.Definitions.merge(build_definitions(), dg.Definitions(jobs=[end_to_end_k8s_job, retrain_k8s_job]))
for _name in (end_to_end_k8s_job.name, retrain_k8s_job.name):
    check_per_step_keys(defs.resolve_job_def(_name), K8S_EXECUTOR_CONFIG)
