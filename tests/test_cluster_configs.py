"""Cluster configs: Ray's own validation for the autoscaler YAMLs in cluster/, structure checks
for the KubeRay manifests in cluster/kuberay/ (kinds, GPU resources, one pinned image, the
RayJob entrypoint parsed by the real job's argparse, the CronJob script run against a fake
kubectl), all cross-checked against jobs/configs/prod.yaml's pool sizes."""

from __future__ import annotations

import copy
import importlib
import os
import shlex
import stat
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from extract.cli import build_parser as extract_parser
from extract.config import load_config

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
PROD = REPO / "jobs" / "configs" / "prod.yaml"
IMAGE_REPO_PATH = "/home/ray/video-features"  # where cluster/Dockerfile puts the repository
RAY_IMAGE = f"rayproject/ray:{version('ray')}-py311-gpu"
GPUS_PER_INSTANCE = {"g5.48xlarge": 8, "g6.48xlarge": 8, "g6e.48xlarge": 8, "p4d.24xlarge": 8,
                     "p4de.24xlarge": 8, "p5.48xlarge": 8}  # AWS instance types with 8 GPUs

AUTOSCALER_CONFIGS = sorted(CLUSTER.glob("*.yaml"))


def _kuberay_docs() -> list[dict]:
    docs = []
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append({**doc, "_file": path.name})
    return docs


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _repo_file(path_in_image: str, mount: str = IMAGE_REPO_PATH) -> Path:
    assert path_in_image.startswith(mount + "/"), f"{path_in_image} is not under {mount}"
    path = REPO / path_in_image[len(mount) + 1:]
    assert path.is_file(), f"{path_in_image} maps to {path}, which does not exist"
    return path


def _check_pools_fit(cpus: float, gpus: float) -> None:
    """prod.yaml's pools fit one node: model actors' GPUs, and decode + model actors' CPUs."""
    from extract.config.machine import GIB, Machine
    from extract.pipeline.resources import check_plan_fits, plan_resources

    node = Machine(cpus=cpus, memory_bytes=cpus * 8 * GIB, gpus=gpus)
    config, plan, _ = plan_resources(load_config([PROD]), node)
    rt = config.runtime
    assert rt.device == "cuda"
    check_plan_fits(plan, node)
    assert (rt.clip_actors + rt.whisper_actors) * rt.num_gpus_per_actor <= gpus
    assert rt.decode_workers + rt.clip_actors + rt.whisper_actors <= cpus


def test_there_is_an_autoscaler_config():
    assert AUTOSCALER_CONFIGS, "cluster/*.yaml: no Ray autoscaler config"


@pytest.mark.parametrize("path", AUTOSCALER_CONFIGS, ids=lambda p: p.name)
def test_autoscaler_config_passes_ray_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    config = prepare_config(copy.deepcopy(raw))  # what `ray up` does before validating
    validate_config(config)

    head = config["head_node_type"]
    gpu_types = [t for name, t in config["available_node_types"].items()
                 if name != head and t.get("resources", {}).get("GPU")]
    assert gpu_types, "no GPU worker node type"
    for node in gpu_types:
        assert node["min_workers"] == 0 < node["max_workers"] <= config["max_workers"], "GPU workers must autoscale"
        assert GPUS_PER_INSTANCE[node["node_config"]["InstanceType"]] == node["resources"]["GPU"]
        _check_pools_fit(node["resources"]["CPU"], node["resources"]["GPU"])
    assert config["docker"]["image"] == RAY_IMAGE, "image must carry the pinned Ray and Python"
    assert any("--num-cpus=0" in cmd for cmd in config["head_start_ray_commands"]), "head runs no actors"

    # The repository is synced to every node and installed there.
    [(mount, local)] = raw["file_mounts"].items()
    assert local == "." and mount == IMAGE_REPO_PATH
    assert any(shlex.split(cmd)[:2] == ["pip", "install"] and cmd.rstrip().endswith(mount)
               for cmd in raw["setup_commands"])

    # The head stages the weights with the real CLI, unless models.yaml is already there.
    [stage_cmd] = [cmd for cmd in raw["head_setup_commands"] if "extract models stage" in cmd]
    check, _, stage = stage_cmd.partition("||")
    argv = shlex.split(stage)
    assert argv[0] == "extract"
    args = extract_parser().parse_args(argv[1:])
    assert (args.command, args.models_command) == ("models", "stage")
    assert [_repo_file(c) for c in args.config] == [PROD]
    assert args.dest.startswith("s3://")
    assert shlex.split(check)[-1] == f"{args.dest}/models.yaml"


def test_raycluster_autoscales_gpu_workers():
    docs = _kuberay_docs()
    cluster = _one(docs, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["rayVersion"] == version("ray") and spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    [group] = spec["workerGroupSpecs"]
    assert group["minReplicas"] == 0 <= group["replicas"] <= group["maxReplicas"] >= 1
    [worker] = group["template"]["spec"]["containers"]
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "8"
    node_type = group["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"]
    assert GPUS_PER_INSTANCE[node_type] == 8
    _check_pools_fit(float(limits["cpu"]), float(limits["nvidia.com/gpu"]))

    # Every Ray pod sees the staged weights on the shared volume at /models.
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for pod in (head["template"]["spec"], group["template"]["spec"]):
        volumes = {v["name"]: v for v in pod["volumes"]}
        [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/models"]
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]


def test_all_pods_run_one_pinned_image():
    images = set()
    for doc in _kuberay_docs():
        text = yaml.safe_dump(doc)
        images |= {line.split("image:", 1)[1].strip() for line in text.splitlines() if "image:" in line}
    assert len(images) == 1, images
    [image] = images
    assert ":" in image and not image.endswith(":latest")
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM {RAY_IMAGE}" in dockerfile and f"COPY --chown=ray:users . {IMAGE_REPO_PATH}" in dockerfile


def test_rayjob_entrypoint_is_a_valid_job_command():
    docs = _kuberay_docs()
    job, cluster = _one(docs, "RayJob"), _one(docs, "RayCluster")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs.")
    module = importlib.import_module(argv[2])
    args = module.build_parser().parse_args(argv[3:])  # SystemExit(2) on an invalid argument
    staged = [c for c in args.config if c.startswith("/models/")]
    assert staged == ["/models/models.yaml"], "the staged weights must follow the job config"
    assert [_repo_file(c) for c in args.config if c not in staged] == [PROD]
    head_mounts = {m["mountPath"] for m in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert "/models" in head_mounts, "the driver (on the head) reads /models/models.yaml"


def test_stage_job_fills_the_shared_volume():
    docs = _kuberay_docs()
    [stage] = [d for d in docs if d["kind"] == "Job"]
    assert stage["apiVersion"] == "batch/v1"
    pod = stage["spec"]["template"]["spec"]
    [container] = pod["containers"]
    argv = container["command"]
    args = extract_parser().parse_args(argv[1:])
    assert argv[0] == "extract" and (args.command, args.models_command) == ("models", "stage")
    assert [_repo_file(c) for c in args.config] == [PROD]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == args.dest]
    assert not mount.get("readOnly")
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == "video-features-models"


def _fake_kubectl(bin_dir: Path, final_status: str) -> Path:
    """A kubectl that logs its arguments, reports Running once, then Complete/``final_status``."""
    log = bin_dir / "calls.log"
    script = bin_dir / "kubectl"
    script.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$1" in
  create) echo rayjob.ray.io/video-features-daily-x7k2p ;;
  get)
    case "$*" in
      *jobDeploymentStatus*)
        if [ -e {bin_dir}/polled ]; then printf Complete; else touch {bin_dir}/polled; printf Running; fi ;;
      *jobStatus*) printf {final_status} ;;
      *message*) printf 'Job finished' ;;
    esac ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


@pytest.mark.parametrize("final_status,expected_rc", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_cronjob_creates_the_rayjob_nightly_and_reports_its_outcome(tmp_path, final_status, expected_rc):
    docs = _kuberay_docs()
    cron = _one(docs, "CronJob")
    assert cron["apiVersion"] == "batch/v1"
    assert len(cron["spec"]["schedule"].split()) == 5 and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]

    # The mounted ConfigMap is the kustomize-generated one holding rayjob-daily.yaml.
    kustomization = _one(docs, "Kustomization")
    for resource in kustomization["resources"]:
        assert (CLUSTER / "kuberay" / resource).is_file()
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["rayjob-daily.yaml"]
    [mount] = container["volumeMounts"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == generator["name"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RAYJOB_MANIFEST"] == f"{mount['mountPath']}/rayjob-daily.yaml"

    # Its service account may create and watch RayJobs.
    role = _one(docs, "Role")
    binding = _one(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": pod["serviceAccountName"]} in binding["subjects"]
    assert any("ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and {"create", "get"} <= set(r["verbs"])
               for r in role["rules"])

    # The script itself, against a fake kubectl: creates from the manifest, polls, fails on failure.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = _fake_kubectl(bin_dir, final_status)
    proc = subprocess.run(container["command"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env, "POLL_SECONDS": "0", "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.returncode == expected_rc, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"create -f {env['RAYJOB_MANIFEST']} -o name"
    assert sum("jobDeploymentStatus" in c for c in calls) == 2
    assert f"Ray job {final_status}" in proc.stdout


def test_the_pipeline_image_tag_is_the_package_version():
    """Every reference to the pipeline's image (manifests, Dockerfile, README) names the version
    in pyproject.toml, so a release bump cannot leave a manifest on the old image."""
    import re
    import tomllib

    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    tags = [(path.relative_to(REPO).as_posix(), tag) for path in sorted(CLUSTER.rglob("*")) if path.is_file()
            for tag in re.findall(r"video-features:([\w.-]+)", path.read_text())]
    assert len(tags) >= 6 and {tag for _, tag in tags} == {package}, tags
